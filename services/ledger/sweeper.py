"""Releases reservations whose TTL has passed and expires lots whose time has come.

`open_reservations` and `expiring_lots` are indexes the sweeper keeps by following the event store's
notification log (their rows and their positions change in one transaction). Expiring a hold or a lot
is an ordinary ledger command (`Expire`, keyed `expire:<reservation>`; `ExpireLot`, keyed
`expire-lot:<lot>`), so when several ledger instances sweep at once, optimistic concurrency on the
account lets exactly one happen and the others find it already done. A lot a hold still draws on is
refused without an event and stays in the index until the hold is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.ledger import store
from services.ledger.application import AnyEvent, Ledger
from services.ledger.commands import (
    Command,
    Expire,
    ExpireLot,
    WarnExpiring,
    expire_key,
    expire_lot_key,
    expiring_key,
)
from services.ledger.domain import CreditAccount
from services.ledger.log_follower import LogFollower
from services.ledger.unit_of_work import UnitOfWork
from services.ledger.values import InvalidCommandError, LedgerError
from shared import clock
from shared.credits import EXPIRY_WARNING_DAYS

log = logging.getLogger(__name__)

__all__ = ["Sweeper"]

C = TypeVar("C", bound=Command)
Close = Callable[[AsyncConnection, C], Awaitable[None]]

TOPICS = tuple(get_topic(e) for e in (CreditAccount.Reserved, CreditAccount.Captured, CreditAccount.Released))
LOT_TOPICS = tuple(get_topic(e) for e in (CreditAccount.Granted, CreditAccount.Expired))


class Sweeper:
    def __init__(self, ledger: Ledger, pool: AsyncConnectionPool, unit: UnitOfWork, interval: float = 2.0) -> None:
        self._index = LogFollower(ledger, pool, "open-reservations", topics=TOPICS)
        self._lots = LogFollower(ledger, pool, "expiring-lots", topics=LOT_TOPICS)

        self._pool = pool
        self._unit = unit
        self._interval = interval

    async def index_once(self) -> int:
        return await self._index.follow_once(self._indexed) + await self._lots.follow_once(self._lot_indexed)

    @staticmethod
    async def _lot_indexed(conn: AsyncConnection, _notification: Notification, event: AnyEvent) -> None:
        match event:
            case CreditAccount.Granted(expires_at=str(expires)):
                lot_id = str(event.originator_version)
                await store.lot_opened(conn, str(event.originator_id), lot_id, datetime.fromisoformat(expires))
            case CreditAccount.Expired():
                await store.lot_closed(conn, str(event.originator_id), event.lot_id)

    @staticmethod
    async def _indexed(conn: AsyncConnection, _notification: Notification, event: AnyEvent) -> None:
        match event:
            case CreditAccount.Reserved():
                expires_at = datetime.fromisoformat(event.expires_at)
                await store.hold_opened(conn, event.reservation_id, str(event.originator_id), expires_at)
            case CreditAccount.Captured() | CreditAccount.Released():
                await store.hold_closed(conn, event.reservation_id)

    async def sweep_once(self, now: datetime | None = None, batch: int = 500) -> int:
        """Release the holds and expire the lots due by `now`; returns how many of them it ended."""
        while await self.index_once():
            pass
        now = now or clock.now()  # moved by CLOCK_OFFSET_SECONDS in dev: a test steps past an expiry
        ended = await self._release_holds(now, batch) + await self._expire_lots(now, batch)
        await self._warn_expiring(now, batch)
        return ended

    async def _warn_expiring(self, now: datetime, batch: int) -> None:
        async with self._pool.connection() as conn:
            due = await store.lots_to_warn(conn, now + timedelta(days=EXPIRY_WARNING_DAYS), batch)
        results = await asyncio.gather(
            *(self._unit.submit(WarnExpiring(user_id=u, key=expiring_key(lot), lot_id=lot)) for u, lot in due)
        )
        async with self._pool.connection() as conn:
            for (user_id, lot_id), result in zip(due, results, strict=True):
                if isinstance(result, LedgerError):
                    log.warning("could not announce lot %s of %s expiring: %s", lot_id, user_id, result)
                await store.lot_warned(conn, user_id, lot_id)

    async def _release_holds(self, now: datetime, batch: int) -> int:
        async with self._pool.connection() as conn:
            due = await store.expired_holds(conn, now, batch)
        commands = [Expire(user_id=u, key=expire_key(rid), reservation_id=rid, now=now) for u, rid in due]
        return await self._settle(
            commands, CreditAccount.Released, lambda c, cmd: store.hold_closed(c, cmd.reservation_id)
        )

    async def _expire_lots(self, now: datetime, batch: int) -> int:
        async with self._pool.connection() as conn:
            due = await store.expired_lots(conn, now, batch)
        commands = [ExpireLot(user_id=u, key=expire_lot_key(lot), lot_id=lot, now=now) for u, lot in due]
        return await self._settle(
            commands, CreditAccount.Expired, lambda c, cmd: store.lot_closed(c, cmd.user_id, cmd.lot_id)
        )

    async def _settle(self, commands: Sequence[C], ended: type[AnyEvent], close: Close[C]) -> int:
        """Submit the due commands; drop from the index what they settled, keep what was refused as not
        yet due (a lot a hold still draws on); return how many ended now (not replays)."""
        results = await asyncio.gather(*(self._unit.submit(cmd) for cmd in commands))
        ended_now = 0
        async with self._pool.connection() as conn:
            for cmd, result in zip(commands, results, strict=True):
                if isinstance(result, InvalidCommandError):
                    log.debug("not yet: %s", result)
                    continue
                if isinstance(result, LedgerError):
                    log.warning("could not apply %s: %s", cmd.key, result)
                else:
                    ended_now += int(isinstance(result.event, ended) and not result.replayed)
                await close(conn, cmd)
        return ended_now

    async def run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.sleep(self._interval)
