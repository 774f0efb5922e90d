"""Identity's use cases on real PostgreSQL: concurrent calls write one state change and one event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool

from services.identity import store
from services.identity.application import ApplyClerkEvent, Identity, SetActive, SyncUser
from services.identity.clerk import ClerkEvent
from services.identity.domain import Profile
from shared import db, migrations
from shared.outbox import OutboxRelay

IdentityAndPool = tuple[Identity, AsyncConnectionPool]


@pytest.fixture
async def identity(database_url: str, schema: str) -> AsyncIterator[IdentityAndPool]:
    await migrations.apply(database_url, schema, (("shared", migrations.SHARED), ("identity", store.MIGRATIONS)))
    pool = await db.open_pool(database_url, schema, max_size=20)
    # The relay is only woken here, never run: these tests read the outbox itself.
    yield Identity(pool, OutboxRelay(pool, js=None)), pool  # type: ignore[arg-type]
    await pool.close()


async def outbox_subjects(pool: AsyncConnectionPool) -> list[str]:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT subject FROM outbox ORDER BY position")
        return [row[0] for row in await cursor.fetchall()]


async def test_twenty_concurrent_first_syncs_create_one_user_and_one_event(identity: IdentityAndPool) -> None:
    app, pool = identity
    profile = Profile(clerk_id="user_race", email="race@example.com")
    results = await asyncio.gather(*(app.execute(SyncUser(profile)) for _ in range(20)))
    assert sum(r.created for r in results) == 1
    assert {r.user.id for r in results} == {results[0].user.id}
    assert await outbox_subjects(pool) == ["identity.user.registered"]


async def test_concurrent_deactivations_write_one_event(identity: IdentityAndPool) -> None:
    app, pool = identity
    user = (await app.execute(SyncUser(Profile(clerk_id="user_off", email="off@example.com")))).user
    changes = await asyncio.gather(*(app.execute(SetActive(user.id, False, reason="test")) for _ in range(10)))
    assert sum(c.changed for c in changes) == 1
    assert all(not c.user.is_active for c in changes)
    assert await outbox_subjects(pool) == ["identity.user.registered", "identity.user.deactivated"]


async def test_a_webhook_delivered_concurrently_is_applied_once(identity: IdentityAndPool) -> None:
    app, pool = identity
    event = ClerkEvent("user.created", "user_hook", Profile(clerk_id="user_hook", email="hook@example.com"))
    applied = await asyncio.gather(*(app.execute(ApplyClerkEvent("msg_same", event)) for _ in range(8)))
    assert sorted(applied) == [False] * 7 + [True]
    assert await outbox_subjects(pool) == ["identity.user.registered"]


async def test_an_update_for_an_unknown_user_creates_it_and_a_no_op_update_publishes_nothing(
    identity: IdentityAndPool,
) -> None:
    app, pool = identity
    profile = Profile(clerk_id="user_late", email="late@example.com", first_name="Late")
    assert await app.execute(ApplyClerkEvent("msg_1", ClerkEvent("user.updated", "user_late", profile)))
    assert await app.execute(ApplyClerkEvent("msg_2", ClerkEvent("user.updated", "user_late", profile)))
    assert await outbox_subjects(pool) == ["identity.user.registered"]
