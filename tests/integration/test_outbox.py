"""The outbox relay against real PostgreSQL and a real nats-server."""

from __future__ import annotations

import json

from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from shared import outbox
from shared.contracts import Envelope
from shared.contracts.identity import UserRegistered
from shared.outbox import OutboxRelay
from tests.integration.conftest import FailingAfter, stream_messages


def registered(n: int) -> Envelope:
    body = UserRegistered(
        user_id=f"u{n}", clerk_id=f"c{n}", email=f"u{n}@example.com", first_name=None, last_name=None, avatar=None
    )
    return Envelope.wrap(body, user_id=f"u{n}")


async def queue(pool: AsyncConnectionPool, envelopes: list[Envelope]) -> None:
    async with pool.connection() as conn, conn.transaction():
        for envelope in envelopes:
            await outbox.add(conn, envelope)


async def pending(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL")).fetchone()
        return int(row[0]) if row else -1


async def test_the_relay_publishes_pending_events_in_order_and_marks_them_sent(
    pool: AsyncConnectionPool, js: JetStreamContext
) -> None:
    envelopes = [registered(n) for n in range(25)]
    await queue(pool, envelopes)

    assert await OutboxRelay(pool, js).relay_once() == 25

    messages = await stream_messages(js, "IDENTITY")
    assert [json.loads(data)["id"] for _, data, _ in messages] == [str(e.id) for e in envelopes]
    assert [headers["Nats-Msg-Id"] for _, _, headers in messages] == [str(e.id) for e in envelopes]
    assert {subject for subject, _, _ in messages} == {"identity.user.registered"}
    assert await pending(pool) == 0
    assert await OutboxRelay(pool, js).relay_once() == 0


async def test_a_relay_killed_mid_batch_resumes_without_losing_or_duplicating(
    pool: AsyncConnectionPool, js: JetStreamContext
) -> None:
    envelopes = [registered(n) for n in range(10)]
    await queue(pool, envelopes)

    crashed = OutboxRelay(pool, FailingAfter(js, 4))  # type: ignore[arg-type]
    try:
        await crashed.relay_once()
        raise AssertionError("the injected crash did not happen")
    except RuntimeError:
        pass
    assert len(await stream_messages(js, "IDENTITY")) == 4  # published, but never marked sent
    assert await pending(pool) == 10

    assert await OutboxRelay(pool, js).relay_once() == 10

    messages = await stream_messages(js, "IDENTITY")
    assert [json.loads(data)["id"] for _, data, _ in messages] == [str(e.id) for e in envelopes]
    assert await pending(pool) == 0
    # Each row knows where its event sits, the four sent twice too (JetStream answered with the first's).
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT event_id::text, stream_seq FROM outbox ORDER BY position")
        recorded = await cursor.fetchall()
    info = await js.stream_info("IDENTITY")
    first = info.state.last_seq - len(envelopes) + 1
    assert recorded == [(str(e.id), first + n) for n, e in enumerate(envelopes)]


async def test_an_event_whose_transaction_rolled_back_is_never_published(
    pool: AsyncConnectionPool, js: JetStreamContext
) -> None:
    try:
        async with pool.connection() as conn, conn.transaction():
            await outbox.add(conn, registered(1))
            raise LookupError("the state change failed")
    except LookupError:
        pass
    kept = registered(2)
    await queue(pool, [kept])

    await OutboxRelay(pool, js).relay_once()

    assert [json.loads(data)["id"] for _, data, _ in await stream_messages(js, "IDENTITY")] == [str(kept.id)]
