"""Publishes each credit event of the event store to the LEDGER stream, in notification order.

The position is tracked durably (a LogFollower). A crash after publishing but before saving the
position re-publishes the same events with the same message ids (derived from the stored event), so
JetStream's duplicate window drops them; and each batch starts no lower than the last notification
already on the stream, so even a relay that was down longer than the window publishes nothing twice.
"""

from __future__ import annotations

from eventsourcing.persistence import Notification
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.ledger.answers import to_envelope
from services.ledger.application import AnyEvent, Ledger
from services.ledger.log_follower import LogFollower
from shared.bus import publish
from shared.relay import STUCK_AFTER_SECONDS, Relay

NOTIFICATION_HEADER = "Ledger-Notification-Id"


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
        self._follower = LogFollower(ledger, pool, "ledger-stream", batch=batch)
        self._js = js

    async def relay_once(self) -> int:
        """Publish the next batch; returns how many notifications it moved past."""
        return await self._follower.follow_once(self._publish, floor=self._last_on_stream)

    async def _publish(self, _conn: AsyncConnection, notification: Notification, event: AnyEvent) -> None:
        envelope = to_envelope(event)
        if envelope is None:
            return
        headers = {NOTIFICATION_HEADER: str(notification.id)}
        if traceparent := getattr(event, "traceparent", None):
            headers["traceparent"] = traceparent  # the trace of the request that caused it goes on
        await publish(self._js, envelope.type, envelope.to_bytes(), msg_id=str(envelope.id), headers=headers)

    async def _last_on_stream(self) -> int:
        """Notification id of the newest message on LEDGER (0 when empty)."""
        info = await self._js.stream_info("LEDGER")
        if not info.state.messages:
            return 0
        try:
            msg = await self._js.get_msg("LEDGER", seq=info.state.last_seq)
        except NotFoundError:
            return 0
        return int((msg.headers or {}).get(NOTIFICATION_HEADER, 0))
