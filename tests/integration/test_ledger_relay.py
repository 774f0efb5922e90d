"""The ledger relay: every stored credit event reaches the LEDGER stream exactly once, even when the
relay dies in the middle of a batch."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext
from nats.js.api import PubAck
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from psycopg_pool import AsyncConnectionPool

from services.ledger import handlers, store
from services.ledger.application import Ledger
from services.ledger.commands import Debit
from services.ledger.stream_relay import LedgerRelay
from shared import bus
from shared.contracts import Envelope
from shared.contracts.identity import UserRegistered
from shared.contracts.ledger import CreditsGranted
from shared.testing.nats import EmbeddedNats
from shared.testing.waiting import eventually
from tests.integration.conftest import FailingAfter, make_pool, stream_messages
from tests.ledger_asks import ask


@pytest.fixture
async def ledger_pool(database_url: str, schema: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = await make_pool(database_url, schema, store.MIGRATIONS)
    yield pool
    await pool.close()


@pytest.fixture
def ledger(database_url: str, schema: str, ledger_pool: AsyncConnectionPool) -> Iterator[Ledger]:
    app = Ledger(env={**store.eventsourcing_env(database_url), "POSTGRES_SCHEMA": schema})
    yield app
    app.close()


def welcome_users(ledger: Ledger, n: int) -> list[str]:
    users = [str(uuid.uuid4()) for _ in range(n)]
    for user in users:
        body = UserRegistered(user_id=user, clerk_id=user, email="u@example.com", first_name=None, last_name=None,
                              avatar=None)  # fmt: skip
        command = handlers.to_command(Envelope.wrap(body, user_id=user), 900)
        assert command is not None
        ledger.execute_batch([command])
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
    bodies = [e.body() for e in envelopes]
    granted = [b for b in bodies if isinstance(b, CreditsGranted)]
    assert len(granted) == len(bodies)
    assert [(b.amount, b.balance_after, b.entry_type) for b in granted] == [(10, 10, "BONUS")] * 5
    assert [h["Nats-Msg-Id"] for _, _, h in messages] == [str(e.id) for e in envelopes]


async def test_a_relay_killed_mid_batch_and_restarted_publishes_each_event_exactly_once(
    ledger: Ledger, ledger_pool: AsyncConnectionPool, js: JetStreamContext
) -> None:
    users = welcome_users(ledger, 12)

    crashed = LedgerRelay(ledger, ledger_pool, FailingAfter(js, 5))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="relay process died"):
        await crashed.relay_once()

    async def sent_before_the_crash_arrived() -> bool:  # published, not yet acknowledged when it died
        return len(await stream_messages(js, "LEDGER")) == 5

    await eventually(sent_before_the_crash_arrived, within=10, what="the five sent before the crash")

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


class Stalled:
    """A JetStream context whose publishes wait until released: a relay caught in the middle of a batch."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self.publishing = asyncio.Event()
        self.go_on = asyncio.Event()

    async def publish(self, *args: object, **kwargs: object) -> object:
        self.publishing.set()
        await self.go_on.wait()
        return await self._js.publish(*args, **kwargs)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self._js, name)


async def test_a_relay_mid_batch_holds_up_its_own_schemas_relays_but_not_another_schemas(
    ledger: Ledger, ledger_pool: AsyncConnectionPool, js: JetStreamContext, database_url: str, tmp_path: Path
) -> None:
    """Two deployments in one database (each its schema and its own NATS): one relay stalled in the
    middle of a batch holds up the relays of its own deployment only."""
    users = welcome_users(ledger, 3)
    other_schema = f"t_{uuid.uuid4().hex[:12]}"
    other_pool = await make_pool(database_url, other_schema, store.MIGRATIONS)
    other_ledger = Ledger(env={**store.eventsourcing_env(database_url), "POSTGRES_SCHEMA": other_schema})
    other_users = welcome_users(other_ledger, 2)
    other_nats = EmbeddedNats(tmp_path / "other-nats", harness=True).start()
    other_nc = await other_nats.connect("tests", "other")
    other_js = other_nc.jetstream()
    await bus.ensure_streams(other_js)
    stalled = Stalled(other_js)
    other_relay = asyncio.create_task(LedgerRelay(other_ledger, other_pool, stalled).relay_once())  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(stalled.publishing.wait(), timeout=10)

        await relay_all(LedgerRelay(ledger, ledger_pool, js))  # another deployment's relay is mid-batch
        messages = await stream_messages(js, "LEDGER")
        assert [json.loads(data)["user_id"] for _, data, _ in messages] == users

        # A second relay of that same deployment waits its turn, so the two never interleave.
        assert await LedgerRelay(other_ledger, other_pool, other_js).relay_once() == 0
        stalled.go_on.set()
        await other_relay
        other_messages = await stream_messages(other_js, "LEDGER")
        assert [json.loads(data)["user_id"] for _, data, _ in other_messages] == other_users
    finally:
        stalled.go_on.set()
        await asyncio.gather(other_relay, return_exceptions=True)
        other_ledger.close()
        await other_pool.close()
        await other_nc.close()
        other_nats.stop()


async def test_a_relay_that_keeps_failing_on_one_event_raises_an_alarm_naming_it(
    ledger: Ledger, ledger_pool: AsyncConnectionPool, js: JetStreamContext
) -> None:
    """An event stored before the doors checked text (a NUL in its description) cannot become a
    contract: the relay publishes what comes before it, never skips it, and says which one it is."""
    [user] = welcome_users(ledger, 1)

    ledger.execute_batch(
        [Debit(user_id=user, key="old", entry_type="USAGE", amount=1, description="stored \x00 long ago")]
    )
    relay = LedgerRelay(ledger, ledger_pool, js, stuck_after=0.3)
    task = asyncio.create_task(relay.run())
    try:

        async def alarmed() -> bool:
            return relay.problem() is not None

        await eventually(alarmed, within=15, what="the relay's alarm")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    problem = relay.problem()
    assert problem is not None and problem.startswith("LedgerRelay has failed for ")
    assert "NotificationError: notification 4 (services.ledger.domain:CreditAccount.Debited)" in problem
    assert "should match pattern" in problem  # the contract refuses the NUL
    [bonus] = [Envelope.from_bytes(data).body() for _, data, _ in await stream_messages(js, "LEDGER")]
    assert isinstance(bonus, CreditsGranted) and bonus.entry_type == "BONUS"


async def test_a_credit_event_carries_on_the_trace_of_the_request_that_caused_it(
    ledger: Ledger, ledger_pool: AsyncConnectionPool, js: JetStreamContext
) -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    [user] = welcome_users(ledger, 1)
    with trace.get_tracer("test").start_as_current_span("POST /api/accounts/{user_id}/debits") as request:
        spend = ask("debit", user, amount=1, description="", metadata={}, key="traced", request_id=None)
    ledger.execute_batch([spend])
    await relay_all(LedgerRelay(ledger, ledger_pool, js))

    bonus, debit = [headers.get("traceparent") for _, _, headers in await stream_messages(js, "LEDGER")]
    assert bonus is None  # registered outside any trace
    assert debit is not None and debit.split("-")[1] == format(request.get_span_context().trace_id, "032x")


class LosingOne:
    """The real JetStream context, but the `n`th message is lost on the way (a dropped connection):
    its acknowledgement never comes. The server's answers to the others are kept in `answers`, in
    the order they came."""

    def __init__(self, js: JetStreamContext, n: int) -> None:
        self._js = js
        self._left = n
        self.answers: list[Any] = []

    async def publish(self, *args: Any, **kwargs: Any) -> Any:
        self._left -= 1
        if self._left == 0:
            raise TimeoutError("lost on the way")
        sent = asyncio.ensure_future(self._js.publish(*args, **kwargs))
        sent.add_done_callback(lambda done: self.answers.append(done.exception() or done.result()))
        return await asyncio.shield(sent)  # the relay may stop waiting; the server answers all the same

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)


async def test_a_message_lost_in_a_batch_is_never_overtaken_by_the_ones_after_it(
    ledger: Ledger, ledger_pool: AsyncConnectionPool, js: JetStreamContext
) -> None:
    users = welcome_users(ledger, 6)
    losing = LosingOne(js, 3)
    with pytest.raises(TimeoutError, match="lost on the way"):
        await LedgerRelay(ledger, ledger_pool, losing).relay_once()  # type: ignore[arg-type]

    async def all_answered() -> bool:  # the relay gave up at the lost one; the others were in flight
        return len(losing.answers) == 5

    await eventually(all_answered, within=15, what="the server's answers to the other five")
    # JetStream stored the two before the lost one and refused every one after it: each named a
    # predecessor the stream lacks.
    assert sorted(type(a).__name__ for a in losing.answers) == ["BadRequestError"] * 3 + ["PubAck"] * 2
    assert all("wrong last msg ID" in str(a) for a in losing.answers if not isinstance(a, PubAck))
    assert [Envelope.from_bytes(data).user_id for _, data, _ in await stream_messages(js, "LEDGER")] == users[:2]

    await relay_all(LedgerRelay(ledger, ledger_pool, js))
    assert [Envelope.from_bytes(data).user_id for _, data, _ in await stream_messages(js, "LEDGER")] == users
