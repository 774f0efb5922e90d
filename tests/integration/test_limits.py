"""Per-user limits on real PostgreSQL: the token bucket's arithmetic, two copies sharing one bucket, and
the open-slot count (live streams) with a dead holder's slot ageing out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from psycopg_pool import AsyncConnectionPool

from shared import db, limits, migrations
from shared.limits import Policy, RateLimiter, Slots, SlotsFullError
from shared.testing.postgres import fresh_database

SCHEMA = "limits"
JOBS = Policy("media-jobs", 30, burst=10)  # the default: 30 a minute, 10 at once
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
async def pools(database_url: str) -> AsyncIterator[list[AsyncConnectionPool]]:
    """Two pools on one database, as two copies of a service have."""
    with fresh_database(database_url) as url:
        await migrations.apply(url, SCHEMA, (("shared", migrations.SHARED),))
        opened = [await db.open_pool(url, SCHEMA) for _ in range(2)]
        try:
            yield opened
        finally:
            for pool in opened:
                await pool.close()


async def test_a_burst_takes_the_bucket_then_it_refills_at_the_quota_rate(pools: list[AsyncConnectionPool]) -> None:
    limiter = RateLimiter(pools[0], {JOBS.name: JOBS})
    user = str(uuid.uuid4())
    burst = [await limiter.take(JOBS.name, user, at=T0) for _ in range(40)]
    assert sum(d.allowed for d in burst) == 10
    assert all(d.allowed for d in burst[:10]) and not any(d.allowed for d in burst[10:])
    refused = burst[-1]
    assert refused.retry_after == 2  # 30 a minute: a token every 2 s
    assert refused.headers() == {"RateLimit-Policy": '"media-jobs";q=30;w=60', "RateLimit": '"media-jobs";r=0;t=20'}

    assert not (await limiter.take(JOBS.name, user, at=T0 + timedelta(seconds=1.9))).allowed
    again = await limiter.take(JOBS.name, user, at=T0 + timedelta(seconds=2))
    assert again.allowed and again.tokens == pytest.approx(0.0, abs=1e-6)
    later = [await limiter.take(JOBS.name, user, at=T0 + timedelta(minutes=5)) for _ in range(12)]
    assert sum(d.allowed for d in later) == 10, "a long pause refills to the burst, not beyond"
    other = await limiter.take(JOBS.name, str(uuid.uuid4()), at=T0)
    assert other.allowed and other.tokens == 9, "each user has a bucket of their own"


async def test_two_copies_share_one_bucket(pools: list[AsyncConnectionPool]) -> None:
    copies = [RateLimiter(pool, {JOBS.name: JOBS}) for pool in pools]
    user = str(uuid.uuid4())
    decisions = await asyncio.gather(*(copies[i % 2].take(JOBS.name, user, at=T0) for i in range(40)))
    assert sum(d.allowed for d in decisions) == 10
    assert {d.allowed for i, d in enumerate(decisions) if i % 2} == {True, False}, "both copies took and refused"


async def test_a_clock_going_back_refills_nothing(pools: list[AsyncConnectionPool]) -> None:
    limiter = RateLimiter(pools[0], {JOBS.name: JOBS})
    user = str(uuid.uuid4())
    for _ in range(10):
        assert (await limiter.take(JOBS.name, user, at=T0)).allowed
    assert not (await limiter.take(JOBS.name, user, at=T0 - timedelta(minutes=5))).allowed
    assert not (await limiter.take(JOBS.name, user, at=T0 + timedelta(seconds=1))).allowed


async def test_slots_hold_at_most_the_limit_and_free_on_exit_or_when_their_holder_died(
    pools: list[AsyncConnectionPool],
) -> None:
    copies = [Slots(pool, "stream", 3) for pool in pools]
    user = str(uuid.uuid4())
    async with copies[0].held(user), copies[1].held(user), copies[0].held(user):
        with pytest.raises(SlotsFullError):
            async with copies[1].held(user):
                pass
        async with copies[0].held(str(uuid.uuid4())):
            pass  # another user's count is their own
    async with copies[1].held(user) as slot:
        async with pools[0].connection() as conn:  # its process died: no beat for an hour
            await conn.execute("UPDATE open_slots SET seen_at = now() - interval '1 hour' WHERE id = %s", (slot.id,))
        async with copies[0].held(user), copies[0].held(user), copies[0].held(user):
            pass
        assert await slot.beat() is False, "a holder silent that long has lost its slot: it must close"
    async with pools[0].connection() as conn:
        count = await (await conn.execute("SELECT count(*) FROM open_slots WHERE user_id = %s", (user,))).fetchone()
    assert count == (0,), "every slot freed on exit"


async def test_four_openings_at_once_get_three_slots(pools: list[AsyncConnectionPool]) -> None:
    copies = [Slots(pool, "stream", 3) for pool in pools]
    user = str(uuid.uuid4())
    release = asyncio.Event()
    outcomes: list[str] = []

    async def open_one(slots: Slots) -> None:
        try:
            async with slots.held(user):
                outcomes.append("open")
                await release.wait()
        except SlotsFullError:
            outcomes.append("full")
            release.set()

    await asyncio.wait_for(asyncio.gather(*(open_one(copies[i % 2]) for i in range(4))), timeout=30)
    assert sorted(outcomes) == ["full", "open", "open", "open"]


COMMANDS = Policy("ledger-commands", 600)  # the default: a lease of 30 tokens at a time


async def bucket(pool: AsyncConnectionPool, user: str) -> float:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT tokens FROM token_buckets WHERE user_id = %s", (user,))
        row = await cursor.fetchone()
    assert row is not None
    return float(row[0])


async def test_a_big_bucket_is_taken_a_lease_at_a_time_and_two_copies_never_pass_it(
    pools: list[AsyncConnectionPool],
) -> None:
    copies = [RateLimiter(pool, {COMMANDS.name: COMMANDS}) for pool in pools]
    user = str(uuid.uuid4())
    first = await copies[0].take(COMMANDS.name, user, at=T0)
    assert first.allowed and first.tokens == 599
    assert await bucket(pools[0], user) == 570, "the copy took 30 at once and spends them without asking"
    for _ in range(29):
        assert (await copies[0].take(COMMANDS.name, user, at=T0)).allowed
    assert await bucket(pools[0], user) == 570, "29 more spent from the lease: no write"

    decisions = await asyncio.gather(*(copies[i % 2].take(COMMANDS.name, user, at=T0) for i in range(1300)))
    assert sum(d.allowed for d in decisions) == 570, "the clock stands still: not one more than the bucket"
    assert {d.allowed for i, d in enumerate(decisions) if i % 2} == {True, False}
    assert all(d.retry_after == 1 for d in decisions if not d.allowed)


async def test_what_a_copy_did_not_spend_of_its_lease_goes_back(
    pools: list[AsyncConnectionPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = RateLimiter(pools[0], {COMMANDS.name: COMMANDS})
    user = str(uuid.uuid4())
    assert (await limiter.take(COMMANDS.name, user, at=T0)).allowed
    assert await bucket(pools[0], user) == 570
    monkeypatch.setattr(limits, "LEASE_SECONDS", 0.0)  # the lease has run out
    again = await limiter.take(COMMANDS.name, user, at=T0)
    assert again.allowed and again.tokens == 598
    assert await bucket(pools[0], user) == 569, "29 unspent went back, 30 taken anew"
