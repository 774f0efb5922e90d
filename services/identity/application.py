"""Identity's use cases: each writes its state and its event in one transaction."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from services.identity import store
from services.identity.domain import Profile, User
from shared import outbox
from shared.auth import user_id_for
from shared.contracts import Envelope
from shared.outbox import OutboxRelay


@dataclass(frozen=True)
class SyncResult:
    user: User
    created: bool


class Identity:
    def __init__(self, pool: AsyncConnectionPool, relay: OutboxRelay) -> None:
        self._pool = pool
        self._relay = relay

    async def sync_user(self, profile: Profile, *, correlation_id: str | None = None) -> SyncResult:
        """createOrGetUser: the first sign-in stores the user and queues identity.user.registered.

        Concurrent first sign-ins race on the unique clerk id; exactly one insert wins, and only the
        winner writes the event.
        """
        user_id = user_id_for(profile.clerk_id)
        async with self._pool.connection() as conn:
            async with conn.transaction():
                user = await store.insert_if_absent(conn, user_id, profile)
                if user is not None:
                    envelope = Envelope.wrap(user.registered(), user_id=user.id, correlation_id=correlation_id)
                    await outbox.add(conn, envelope)
            if user is None:
                existing = await store.by_clerk_id(conn, profile.clerk_id)
                assert existing is not None, "insert conflicted, so the row exists"
                return SyncResult(existing, created=False)
        self._relay.wake()
        return SyncResult(user, created=True)
