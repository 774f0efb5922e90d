"""Publishes each credit event of the event store to the LEDGER stream, in notification order.

The position is tracked durably (a LogFollower). A crash after publishing but before saving the
position re-publishes the same events with the same message ids (derived from the stored event), so
JetStream's duplicate window drops them; and each batch starts no lower than the last notification
already on the stream, so even a relay that was down longer than the window publishes nothing twice.
It reads only the events that have a contract (not idempotency records).

A batch is published without waiting for each acknowledgement (a task per message, started in order;
nats-py's publish_async leaves a refused message's future unresolved), and the position moves only
once all are in. Each message names the one before it (`Nats-Expected-Last-Msg-Id`), so if one is lost on the
way, JetStream refuses every later one instead of storing it first: an account's events can never
overtake each other on the stream (projections rely on that order). Only the relay of this schema,
holding its lock, publishes to LEDGER.
"""

from __future__ import annotations

import asyncio

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic
from nats.js import JetStreamContext
from nats.js.api import Header, PubAck
from nats.js.errors import NotFoundError
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.ledger import events
from services.ledger.answers import STREAMED_EVENTS, to_envelope
from services.ledger.application import AnyEvent, Ledger
from services.ledger.log_follower import LogFollower
from shared.relay import STUCK_AFTER_SECONDS, Relay

NOTIFICATION_HEADER = "Ledger-Notification-Id"
PUBLISHED_TOPICS = tuple(get_topic(event) for event in STREAMED_EVENTS)
ACK_TIMEOUT_SECONDS = 10.0


class LedgerRelay(Relay):
    def __init__(
        self,
        ledger: Ledger,
        pool: AsyncConnectionPool,
        js: JetStreamContext,
        batch: int = 500,
        stuck_after: float = STUCK_AFTER_SECONDS,
    ) -> None:
        super().__init__(poll_interval=0.2, stuck_after=stuck_after)
        self._follower = LogFollower(ledger, pool, "ledger-stream", topics=PUBLISHED_TOPICS, batch=batch)
        self._js = js
        # The message id the stream holds last, read under the lock at the start of each batch.
        self._last_id: str | None = None
        self._acks: list[asyncio.Task[PubAck]] = []

    async def relay_once(self) -> int:
        """Publish the next batch; returns how many notifications it moved past."""
        try:
            return await self._follower.follow_once(
                self._publish, floor=self._last_on_stream, settle=self._acknowledged
            )
        finally:
            for ack in self._acks:
                ack.cancel()
            self._acks.clear()

    async def backlog(self) -> int:
        return await self._follower.behind()

    async def _publish(self, _conn: AsyncConnection, notification: Notification, event: AnyEvent) -> None:
        envelope = to_envelope(event)
        if envelope is None:
            return
        headers = {NOTIFICATION_HEADER: str(notification.id), Header.MSG_ID.value: str(envelope.id)}
        if self._last_id is not None:
            headers[Header.EXPECTED_LAST_MSG_ID.value] = self._last_id
        if isinstance(event, events.Stamped) and (traceparent := event.traceparent):
            headers["traceparent"] = traceparent  # the trace of the request that caused it goes on
        publish = self._js.publish(envelope.type, envelope.to_bytes(), timeout=ACK_TIMEOUT_SECONDS, headers=headers)
        self._acks.append(asyncio.create_task(publish))
        self._last_id = str(envelope.id)

    async def _acknowledged(self) -> None:
        """Every message of the batch is stored (or was already): else raise, and the batch is retried."""
        await asyncio.gather(*self._acks)

    async def _last_on_stream(self) -> int:
        """Notification id of the newest message on LEDGER (0 when empty); remembers its message id."""
        self._last_id = None
        info = await self._js.stream_info("LEDGER")
        if not info.state.messages:
            return 0
        try:
            msg = await self._js.get_msg("LEDGER", seq=info.state.last_seq)
        except NotFoundError:
            return 0
        headers = msg.headers or {}
        self._last_id = headers.get(Header.MSG_ID.value)
        return int(headers.get(NOTIFICATION_HEADER, 0))
