"""The ledger relay: every stored credit event reaches the LEDGER stream exactly once, even when the
relay dies in the middle of a batch."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from services.ledger import handlers, store
from services.ledger.application import Ledger
from services.ledger.relay import RELAY, LedgerRelay
from shared import db
from shared.contracts import Envelope
from shared.contracts.identity import UserRegistered
from shared.contracts.ledger import CreditsGranted
from tests.integration.conftest import FailingAfter, make_pool, stream_messages


@pytest.fixture
async def ledger_pool(database_url: str, schema: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = await make_pool(database_url, schema, store.DDL)
    yield pool
    await pool.close()


@pytest.fixture
def ledger(database_url: str, schema: str, ledger_pool: AsyncConnectionPool) -> Ledger:
    app = Ledger(env={**store.eventsourcing_env(database_url), "POSTGRES_SCHEMA": schema})
    yield app
    app.close()


def welcome_users(ledger: Ledger, n: int) -> list[str]:
    users = [str(uuid.uuid4()) for _ in range(n)]
    for user in users:
        body = UserRegistered(user_id=user, clerk_id=user, email="u@example.com", first_name=None, last_name=None,
                              avatar=None)  # fmt: skip
        ledger.execute_batch([handlers.user_registered(Envelope.wrap(body, user_id=user), 900)])
    return users


async def relay_all(relay: LedgerRelay) -> None:
    while await relay.relay_once():
        pass


async def test_every_credit_event_is_published_once_with_an_id_derived_from_the_stored_event(
    ledger: Ledger, ledger_pool: AsyncConnectionPool, js: JetStreamContext
) -> None:
    users = welcome_users(ledger, 5)

    await relay_all(LedgerRelay(ledger, ledger_pool, js))
    await relay_all(LedgerRelay(ledger, ledger_pool, js))  # a second relay finds nothing new

    messages = await stream_messages(js, "LEDGER")
    envelopes = [Envelope.from_bytes(data) for _, data, _ in messages]
    assert [e.user_id for e in envelopes] == users
    assert all(isinstance(e.body(), CreditsGranted) for e in envelopes)
    assert [(e.body().amount, e.body().balance_after, e.body().entry_type) for e in envelopes] == [
        (10, 10, "BONUS")
    ] * 5
    assert [h["Nats-Msg-Id"] for _, _, h in messages] == [str(e.id) for e in envelopes]


async def test_a_relay_killed_mid_batch_and_restarted_publishes_each_event_exactly_once(
    ledger: Ledger, ledger_pool: AsyncConnectionPool, js: JetStreamContext
) -> None:
    users = welcome_users(ledger, 12)

    crashed = LedgerRelay(ledger, ledger_pool, FailingAfter(js, 5))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="relay process died"):
        await crashed.relay_once()
    assert len(await stream_messages(js, "LEDGER")) == 5

    await relay_all(LedgerRelay(ledger, ledger_pool, js))

    messages = await stream_messages(js, "LEDGER")
    assert [json.loads(data)["user_id"] for _, data, _ in messages] == users
    assert len({h["Nats-Msg-Id"] for _, _, h in messages}) == 12


async def test_a_relay_that_lost_its_position_resumes_from_the_stream_not_from_the_start(
    ledger: Ledger, ledger_pool: AsyncConnectionPool, js: JetStreamContext
) -> None:
    welcome_users(ledger, 3)
    await relay_all(LedgerRelay(ledger, ledger_pool, js))
    async with ledger_pool.connection() as conn:
        await conn.execute("DELETE FROM relay_position")
    # Outlive the duplicate window, so only the relay's own resume point can prevent a re-publish.
    info = await js.stream_info("LEDGER")
    await js.update_stream(dataclasses.replace(info.config, duplicate_window=0.1))
    await asyncio.sleep(0.3)

    later = welcome_users(ledger, 2)
    await relay_all(LedgerRelay(ledger, ledger_pool, js))

    messages = await stream_messages(js, "LEDGER")
    assert len(messages) == 5
    assert [json.loads(data)["user_id"] for _, data, _ in messages[-2:]] == later


async def test_only_one_relay_per_schema_works_at_a_time_and_other_schemas_do_not_hold_it_up(
    ledger: Ledger, ledger_pool: AsyncConnectionPool, js: JetStreamContext, database_url: str
) -> None:
    users = welcome_users(ledger, 3)
    other_deployment = await make_pool(database_url, f"t_{uuid.uuid4().hex[:12]}")
    try:
        async with ledger_pool.connection() as mine, mine.transaction():
            assert await db.try_lock(mine, RELAY)  # another relay of this ledger is mid-batch
            assert await LedgerRelay(ledger, ledger_pool, js).relay_once() == 0
        assert await stream_messages(js, "LEDGER") == []

        async with other_deployment.connection() as theirs, theirs.transaction():
            assert await db.try_lock(theirs, RELAY)  # the same relay of a ledger in another schema
            await relay_all(LedgerRelay(ledger, ledger_pool, js))
    finally:
        await other_deployment.close()

    messages = await stream_messages(js, "LEDGER")
    assert [json.loads(data)["user_id"] for _, data, _ in messages] == users
