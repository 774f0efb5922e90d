"""Follows the event store's notification log and publishes each credit event to LEDGER.

The position is tracked durably in `relay_position`. A crash after publishing but before saving the
position re-publishes the same events with the same message ids (derived from the stored event), so
JetStream's duplicate window drops them; and on start the position is raised to the last notification
already on the stream, so even a relay that was down longer than the window publishes nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from eventsourcing.persistence import Notification
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from psycopg_pool import AsyncConnectionPool

from services.ledger import store
from services.ledger.application import Ledger
from shared import db
from shared.bus import publish
from shared.contracts import Envelope, EventData, derive_id
from shared.contracts import ledger as contracts
from shared.relay import STUCK_AFTER_SECONDS, Relay

log = logging.getLogger(__name__)

RELAY = "ledger-stream"
NOTIFICATION_HEADER = "Ledger-Notification-Id"


# Stored account event name -> (contract, the stored attributes it copies). Events not listed
# (Opened, Deactivated, Reactivated) stay inside the ledger.
_ENTRY = ("entry_type", "amount", "balance_after", "description", "metadata")
_HOLD = ("reservation_id", "job_id", "amount")
CONTRACTS: dict[str, tuple[type[EventData], tuple[str, ...]]] = {
    "Granted": (contracts.CreditsGranted, _ENTRY),
    "Debited": (contracts.CreditsDebited, (*_ENTRY, "shortfall")),
    "DebitRejected": (contracts.DebitRejected, ("amount", "available", "reason")),
    "Reserved": (contracts.CreditsReserved, (*_HOLD, "expires_at", "reserved_after")),
    "ReservationRejected": (contracts.ReservationRejected, (*_HOLD, "available", "reason")),
    "Captured": (
        contracts.CreditsCaptured,
        (*_HOLD, "released", "balance_after", "reserved_after", "description"),
    ),
    "Released": (contracts.CreditsReleased, (*_HOLD, "reason", "reserved_after")),
}


def to_contract(event: Any) -> EventData | None:
    """The public contract of a stored account event, or None for an internal one."""
    mapping = CONTRACTS.get(type(event).__name__)
    if mapping is None:
        return None
    model, attributes = mapping
    fields = {name: getattr(event, name) for name in attributes}
    if "balance" in model.model_fields:
        fields["balance"] = event.balance_after
    return model(
        user_id=str(event.originator_id),
        idempotency_key=event.idempotency_key,
        cause_id=event.cause_id,
        **fields,
    )


def to_envelope(event: Any) -> Envelope | None:
    body = to_contract(event)
    if body is None:
        return None
    event_id = derive_id("ledger", event.originator_id, event.originator_version)
    return Envelope.wrap(
        body,
        user_id=str(event.originator_id),
        event_id=event_id,
        occurred_at=event.timestamp,
        correlation_id=getattr(event, "correlation_id", None) or str(event_id),
        causation_id=event.cause_id,
    )


class UnpublishableEventError(Exception):
    pass


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
        self._ledger = ledger
        self._pool = pool
        self._js = js
        self._batch = batch

    async def relay_once(self) -> int:
        """Publish the next batch; returns how many notifications it moved past."""
        async with self._pool.connection() as conn, conn.transaction():
            if not await db.try_lock(conn, RELAY):
                return 0
            position = max(await store.load_position(conn, RELAY), await self._last_on_stream())
            notifications: list[Notification] = await asyncio.to_thread(
                self._ledger.recorder.select_notifications, position + 1, self._batch
            )
            for notification in notifications:
                await self._publish(notification)
            if notifications:
                await store.save_position(conn, RELAY, notifications[-1].id)
            return len(notifications)

    async def _publish(self, notification: Notification) -> None:
        try:
            envelope = to_envelope(self._ledger.mapper.to_domain_event(notification))
        except Exception as exc:
            # Nothing after it can be published either: say which stored event holds the stream up.
            raise UnpublishableEventError(f"notification {notification.id} ({notification.topic}): {exc}") from exc
        if envelope is None:
            return
        headers = {NOTIFICATION_HEADER: str(notification.id)}
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
