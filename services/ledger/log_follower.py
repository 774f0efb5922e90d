"""Follows the event store's notification log from a durable position: the stream relay and the
sweeper's index of open holds are both followers.

Each batch runs in one transaction under an advisory lock of the follower's name (keyed by schema),
so copies of the ledger take turns instead of interleaving; what the follower does with a batch and
the position it reached are committed together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from eventsourcing.persistence import Notification
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.ledger import store
from services.ledger.application import AnyEvent, Ledger
from shared import db

Apply = Callable[[AsyncConnection, Notification, AnyEvent], Awaitable[None]]
Floor = Callable[[], Awaitable[int]]
Settle = Callable[[], Awaitable[None]]


class NotificationError(Exception):
    """What a follower could not do with one stored event (read it, publish it, index it): nothing after
    it is handled either, until the cause is fixed."""


class LogFollower:
    def __init__(
        self, ledger: Ledger, pool: AsyncConnectionPool, name: str, *, topics: Sequence[str] = (), batch: int = 500
    ) -> None:
        self._ledger = ledger
        self._pool = pool
        self.name = name
        self._topics = tuple(topics)
        self._batch = batch

    async def behind(self) -> int:
        """Stored events after this follower's position, of every topic (those it skips included)."""
        async with self._pool.connection() as conn:
            position = await store.load_position(conn, self.name)
        newest = await asyncio.to_thread(self._ledger.recorder.max_notification_id)
        return max(0, (newest or 0) - position)

    async def follow_once(self, apply: Apply, *, floor: Floor | None = None, settle: Settle | None = None) -> int:
        """Apply the next batch after the stored position (or `floor()`, asked under the lock, if higher),
        and `settle()` it before the position moves; returns how many notifications it moved past."""
        async with self._pool.connection() as conn, conn.transaction():
            if not await db.try_lock(conn, self.name):
                return 0
            position = await store.load_position(conn, self.name)
            if floor is not None:
                position = max(position, await floor())
            notifications: Sequence[Notification] = await asyncio.to_thread(
                self._ledger.recorder.select_notifications, position + 1, self._batch, topics=self._topics
            )
            for notification in notifications:
                try:
                    event = self._ledger.mapper.to_domain_event(notification)
                    await apply(conn, notification, event)
                except Exception as exc:
                    raise NotificationError(f"notification {notification.id} ({notification.topic}): {exc}") from exc
            if settle is not None:
                await settle()
            if notifications:
                await store.save_position(conn, self.name, notifications[-1].id)
            return len(notifications)
