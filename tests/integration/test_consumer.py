"""The durable consumer loop: explicit ack, bounded redelivery, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from nats.js import JetStreamContext

from shared.bus import Consumer, Subscription, deadletter_subject, publish
from shared.contracts import Envelope
from shared.contracts.identity import UserDeactivated
from shared.testing.waiting import eventually
from tests.integration.conftest import stream_messages


def deactivated(user: str) -> Envelope:
    return Envelope.wrap(UserDeactivated(user_id=user), user_id=user)


@contextlib.asynccontextmanager
async def running(
    js: JetStreamContext, subscription: Subscription, max_deliver: int = 3, ack_wait: float = 30.0
) -> AsyncIterator[None]:
    task = asyncio.create_task(Consumer(js, subscription, max_deliver=max_deliver, ack_wait=ack_wait).run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def send(js: JetStreamContext, envelope: Envelope, msg_id: str | None = None) -> None:
    await publish(js, envelope.type, envelope.to_bytes(), msg_id=msg_id or str(envelope.id))


async def test_a_failing_handler_is_retried_until_it_succeeds_and_then_acked(js: JetStreamContext) -> None:
    attempts: list[str] = []

    async def flaky(envelope: Envelope, seq: int) -> None:
        attempts.append(envelope.user_id or "")
        if len(attempts) < 3:
            raise ConnectionError("database briefly away")

    async with running(js, Subscription("IDENTITY", "flaky", ("identity.>",), flaky), max_deliver=5):
        await send(js, deactivated("u1"))

        async def settled() -> bool:
            info = await js.consumer_info("IDENTITY", "flaky")
            return len(attempts) == 3 and info.num_ack_pending == 0 and info.num_pending == 0

        await eventually(settled, within=15)
    assert attempts == ["u1", "u1", "u1"]
    assert await stream_messages(js, "DEADLETTER") == []


async def test_a_poison_message_is_dead_lettered_and_the_stream_moves_on(js: JetStreamContext) -> None:
    handled: list[str] = []

    async def handler(envelope: Envelope, seq: int) -> None:
        if envelope.user_id == "poison":
            raise ValueError("cannot apply this")
        handled.append(envelope.user_id or "")

    poison = deactivated("poison")
    async with running(js, Subscription("IDENTITY", "picky", ("identity.>",), handler), max_deliver=3):
        await send(js, poison)
        await send(js, deactivated("fine"))

        async def dead_lettered() -> bool:
            return len(await stream_messages(js, "DEADLETTER")) == 1 and handled == ["fine"]

        await eventually(dead_lettered, within=15)
    [(subject, data, headers)] = await stream_messages(js, "DEADLETTER")
    assert subject == deadletter_subject("picky", "identity.user.deactivated")
    assert Envelope.from_bytes(data).id == poison.id
    assert headers["Deadletter-Reason"] == "ValueError: cannot apply this"
    assert headers["Deadletter-Consumer"] == "picky"


async def test_a_message_that_is_not_a_valid_contract_is_dead_lettered_at_once(js: JetStreamContext) -> None:
    calls: list[Envelope] = []

    async def handler(envelope: Envelope, seq: int) -> None:
        calls.append(envelope)

    async with running(js, Subscription("IDENTITY", "strict", ("identity.>",), handler)):
        # A registered event missing its required clerk_id and email.
        bad = Envelope.wrap(UserDeactivated(user_id="x"), user_id="x").model_copy(
            update={"type": "identity.user.registered"}
        )
        await send(js, bad)

        async def parked() -> bool:
            return len(await stream_messages(js, "DEADLETTER")) == 1

        await eventually(parked, within=15)
    assert calls == []
    [(_, _, headers)] = await stream_messages(js, "DEADLETTER")
    assert headers["Deadletter-Reason"].startswith("invalid contract")


async def test_a_republished_event_id_is_dropped_by_the_duplicate_window(js: JetStreamContext) -> None:
    envelope = deactivated("u2")
    await send(js, envelope)
    await send(js, envelope)
    assert len(await stream_messages(js, "IDENTITY")) == 1


async def test_a_batch_is_applied_at_once_and_a_poison_message_in_one_is_parked_alone(js: JetStreamContext) -> None:
    batches: list[list[str]] = []
    applied: list[str] = []

    async def one(envelope: Envelope, seq: int) -> None:
        if envelope.user_id == "poison":
            raise ValueError("cannot apply this")
        applied.append(envelope.user_id or "")

    async def many(events: Sequence[tuple[Envelope, int]]) -> None:
        users = [envelope.user_id or "" for envelope, _ in events]
        if "poison" in users:
            raise ValueError("cannot apply this")  # all or none: nothing of this batch is applied
        batches.append(users)
        applied.extend(users)

    for user in ("a", "b", "c"):
        await send(js, deactivated(user))
    async with running(js, Subscription("IDENTITY", "batched", ("identity.>",), one, many), max_deliver=2):

        async def first_batch() -> bool:
            return applied == ["a", "b", "c"]

        await eventually(first_batch, within=15, what="the first three applied")
        for user in ("d", "poison", "e"):
            await send(js, deactivated(user))

        async def settled() -> bool:
            return len(await stream_messages(js, "DEADLETTER")) == 1 and applied[3:] == ["d", "e"]

        await eventually(settled, within=15, what="the good ones applied, the poison parked")
    assert batches[0] == ["a", "b", "c"]  # one call for the whole fetch
    [(subject, _, _)] = await stream_messages(js, "DEADLETTER")
    assert subject == deadletter_subject("batched", "identity.user.deactivated")


async def test_a_handler_working_longer_than_the_ack_wait_keeps_its_message(js: JetStreamContext) -> None:
    calls: list[int] = []

    async def slow(envelope: Envelope, seq: int) -> None:
        calls.append(seq)
        await asyncio.sleep(3.5)  # 3.5 ack waits: only the progress beats keep it from being redelivered

    async with running(js, Subscription("IDENTITY", "slow", ("identity.>",), slow, fetch=1), ack_wait=1.0):
        await send(js, deactivated("u1"))

        async def acked() -> bool:
            info = await js.consumer_info("IDENTITY", "slow")
            return bool(calls) and info.num_ack_pending == 0 and info.num_pending == 0

        await eventually(acked, within=15)
    assert len(calls) == 1


async def test_a_message_whose_consumer_dies_every_time_is_settled_after_the_bound_without_running_again(
    js: JetStreamContext,
) -> None:
    started: list[int] = []
    settled: list[str] = []
    working = asyncio.Event()

    async def dies(envelope: Envelope, seq: int) -> None:
        started.append(seq)
        working.set()
        await asyncio.sleep(3600)  # killed before it ends, like a worker SIGKILLed mid-job

    async def give_up(envelope: Envelope, reason: str) -> None:
        settled.append(reason)

    subscription = Subscription("IDENTITY", "dies", ("identity.>",), dies, give_up=give_up, fetch=1)
    await send(js, deactivated("u1"))
    for _ in range(2):  # max_deliver: each delivery's consumer dies mid-handler
        working.clear()
        async with running(js, subscription, max_deliver=2, ack_wait=1.0):
            await asyncio.wait_for(working.wait(), timeout=15)
    async with running(js, subscription, max_deliver=2, ack_wait=1.0):

        async def given_up() -> bool:
            info = await js.consumer_info("IDENTITY", "dies")
            return bool(settled) and info.num_ack_pending == 0

        await eventually(given_up, within=15)
    assert len(started) == 2  # the third delivery settled it without running the handler
    assert settled == ["delivered 2 times without an outcome (its consumer died?)"]
    assert await stream_messages(js, "DEADLETTER") == []
