"""Releases reservations whose TTL has passed.

`open_reservations` is an index the sweeper keeps by following the event store's notification log
(its position and its rows change in one transaction). Expiring a hold is an ordinary ledger command
keyed `expire:<reservation>`, so when several ledger instances sweep at once, optimistic concurrency
on the account lets exactly one release happen and the others find it already done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from eventsourcing.utils import get_topic
from psycopg_pool import AsyncConnectionPool

from services.ledger import store
from services.ledger.application import Command, Ledger, Seen
from services.ledger.commands import fingerprint
from services.ledger.dispatch import Dispatcher
from services.ledger.domain import CreditAccount, InvalidCommandError, LedgerError
from shared import db

log = logging.getLogger(__name__)

INDEX = "open-reservations"
TOPICS = tuple(get_topic(getattr(CreditAccount, n)) for n in ("Reserved", "Captured", "Released"))


def expire(user_id: str, reservation_id: str, now: datetime) -> Command:
    key, fp = f"expire:{reservation_id}", fingerprint("expire", rid=reservation_id)

    def act(account: CreditAccount, _seen: Seen) -> None:
        held = account.reservations.get(reservation_id)
        if held is None:
            account.note(reason="hold settled before it expired", key=key, fingerprint=fp)
        elif datetime.fromisoformat(held[2]) > now:
            # Refused without an event, so the key stays free for when it does expire.
            raise InvalidCommandError(f"reservation {reservation_id} has not expired")
        else:
            account.release(reservation_id=reservation_id, reason="expired", key=key, fingerprint=fp)

    return Command(user_id, key, fp, act, create=False)


class Sweeper:
    def __init__(
        self, ledger: Ledger, pool: AsyncConnectionPool, dispatcher: Dispatcher, interval: float = 2.0
    ) -> None:
        self._ledger = ledger
        self._pool = pool
        self._dispatcher = dispatcher
        self._interval = interval

    async def index_once(self, batch: int = 500) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            if not await db.try_lock(conn, INDEX):
                return 0
            position = await store.load_position(conn, INDEX)
            notifications = await asyncio.to_thread(
                self._ledger.recorder.select_notifications, position + 1, batch, topics=TOPICS
            )
            for notification in notifications:
                event = self._ledger.mapper.to_domain_event(notification)
                if type(event).__name__ == "Reserved":
                    expires_at = datetime.fromisoformat(event.expires_at)  # type: ignore[attr-defined]
                    await store.hold_opened(conn, event.reservation_id, str(event.originator_id), expires_at)  # type: ignore[attr-defined]
                else:
                    await store.hold_closed(conn, event.reservation_id)  # type: ignore[attr-defined]
            if notifications:
                await store.save_position(conn, INDEX, notifications[-1].id)
            return len(notifications)

    async def sweep_once(self, now: datetime | None = None, batch: int = 500) -> int:
        """Release what has expired by `now`; returns how many holds it released."""
        while await self.index_once():
            pass
        now = now or datetime.now(UTC)
        async with self._pool.connection() as conn:
            due = await store.expired_holds(conn, now, batch)
        results = await asyncio.gather(*(self._dispatcher.submit(expire(u, r, now)) for u, r in due))
        released = 0
        async with self._pool.connection() as conn:
            for (user_id, rid), result in zip(due, results, strict=True):
                if isinstance(result, LedgerError):
                    log.warning("could not expire %s of %s: %s", rid, user_id, result)
                    if not isinstance(result, InvalidCommandError):
                        await store.hold_closed(conn, rid)
                    continue
                released += int(type(result.event).__name__ == "Released" and not result.replayed)
                await store.hold_closed(conn, rid)
        return released

    async def run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reservation sweep failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.sleep(self._interval)
