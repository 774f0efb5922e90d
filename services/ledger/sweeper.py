"""Releases reservations whose TTL has passed.

`open_reservations` is an index the sweeper keeps by following the event store's notification log
(its rows and its position change in one transaction). Expiring a hold is an ordinary ledger command
(`Expire`, keyed `expire:<reservation>`), so when several ledger instances sweep at once, optimistic
concurrency on the account lets exactly one release happen and the others find it already done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.ledger import store
from services.ledger.application import AnyEvent, Ledger
from services.ledger.commands import expire
from services.ledger.domain import CreditAccount, InvalidCommandError, LedgerError
from services.ledger.log_follower import LogFollower
from services.ledger.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

__all__ = ["Sweeper", "expire"]

TOPICS = tuple(get_topic(e) for e in (CreditAccount.Reserved, CreditAccount.Captured, CreditAccount.Released))


class Sweeper:
    def __init__(self, ledger: Ledger, pool: AsyncConnectionPool, unit: UnitOfWork, interval: float = 2.0) -> None:
        self._index = LogFollower(ledger, pool, "open-reservations", topics=TOPICS)
        self._pool = pool
        self._unit = unit
        self._interval = interval

    async def index_once(self) -> int:
        return await self._index.follow_once(self._indexed)

    @staticmethod
    async def _indexed(conn: AsyncConnection, _notification: Notification, event: AnyEvent) -> None:
        match event:
            case CreditAccount.Reserved():
                expires_at = datetime.fromisoformat(event.expires_at)
                await store.hold_opened(conn, event.reservation_id, str(event.originator_id), expires_at)
            case CreditAccount.Captured() | CreditAccount.Released():
                await store.hold_closed(conn, event.reservation_id)

    async def sweep_once(self, now: datetime | None = None, batch: int = 500) -> int:
        """Release what has expired by `now`; returns how many holds it released."""
        while await self.index_once():
            pass
        now = now or datetime.now(UTC)
        async with self._pool.connection() as conn:
            due = await store.expired_holds(conn, now, batch)
        results = await asyncio.gather(*(self._unit.submit(expire(u, r, now)) for u, r in due))
        released = 0
        async with self._pool.connection() as conn:
            for (user_id, rid), result in zip(due, results, strict=True):
                if isinstance(result, LedgerError):
                    log.warning("could not expire %s of %s: %s", rid, user_id, result)
                    if not isinstance(result, InvalidCommandError):
                        await store.hold_closed(conn, rid)
                    continue
                released += int(isinstance(result.event, CreditAccount.Released) and not result.replayed)
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
