"""The inbox: an event id is claimed once per consumer, even by concurrent duplicates."""

from __future__ import annotations

import asyncio
import uuid

from psycopg_pool import AsyncConnectionPool

from shared.inbox import first_delivery


async def test_an_event_is_claimed_once_and_a_redelivery_is_recognised(pool: AsyncConnectionPool) -> None:
    event_id = uuid.uuid4()
    async with pool.connection() as conn:
        assert await first_delivery(conn, "c1", event_id) is True
        assert await first_delivery(conn, "c1", event_id) is False
        # Another consumer handles the same event on its own account.
        assert await first_delivery(conn, "c2", event_id) is True


async def test_a_claim_rolled_back_with_its_effect_can_be_made_again(pool: AsyncConnectionPool) -> None:
    event_id = uuid.uuid4()
    try:
        async with pool.connection() as conn, conn.transaction():
            assert await first_delivery(conn, "c1", event_id)
            raise ConnectionError("the effect failed")
    except ConnectionError:
        pass
    async with pool.connection() as conn:
        assert await first_delivery(conn, "c1", event_id) is True


async def test_concurrent_duplicates_apply_the_effect_once(pool: AsyncConnectionPool) -> None:
    event_id = uuid.uuid4()
    async with pool.connection() as conn:
        await conn.execute("CREATE TABLE effects (n INT)")

    async def deliver() -> None:
        async with pool.connection() as conn, conn.transaction():
            if await first_delivery(conn, "c1", event_id):
                await conn.execute("INSERT INTO effects VALUES (1)")
                await asyncio.sleep(0.05)  # hold the transaction open so the duplicates really overlap

    await asyncio.gather(*(deliver() for _ in range(8)))
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) FROM effects")).fetchone()
    assert row == (1,)
