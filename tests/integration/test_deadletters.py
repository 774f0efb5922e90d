"""A parked message is an alarm, not a silent loss: it names its consumer and origin, makes its
service alarm, and after a fix is re-driven to that consumer and applied exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.js import JetStreamContext

from shared.bus import Consumer, Subscription, deadletters, publish
from shared.contracts import Envelope
from shared.contracts.identity import UserDeactivated
from shared.testing.waiting import eventually


def deactivated(user: str) -> Envelope:
    return Envelope.wrap(UserDeactivated(user_id=user), user_id=user)


class Reader:
    """A read model whose apply fails for one user until it is fixed; remembers what it applied."""

    def __init__(self) -> None:
        self.broken_for = "poison"
        self.applied: list[tuple[str, int]] = []

    async def apply(self, envelope: Envelope, seq: int) -> None:
        if envelope.user_id == self.broken_for:
            raise ValueError("cannot apply this")
        if (str(envelope.id), seq) not in self.applied:  # its inbox: a second delivery changes nothing
            self.applied.append((str(envelope.id), seq))


@contextlib.asynccontextmanager
async def consuming(nc: Client, js: JetStreamContext, subscription: Subscription) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(Consumer(js, subscription, max_deliver=2).run()),
        asyncio.create_task(deadletters.Redriver(js, subscription).run(nc)),
    ]
    await asyncio.sleep(0)
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_parked_message_alarms_until_it_is_re_driven_after_a_fix_and_applied_once(
    nc: Client, js: JetStreamContext
) -> None:
    reader = Reader()
    subscription = Subscription("IDENTITY", "reader", ("identity.>",), reader.apply)
    poison, fine = deactivated("poison"), deactivated("fine")
    async with consuming(nc, js, subscription):
        await publish(js, poison.type, poison.to_bytes(), msg_id=str(poison.id))
        await publish(js, fine.type, fine.to_bytes(), msg_id=str(fine.id))

        async def parked() -> bool:
            return (await deadletters.counts(js))["reader"] == 1 and len(reader.applied) == 1

        await eventually(parked, within=15, what="the poison message parked, the next one applied")
        problem = await deadletters.parked_problem(js, ["reader", "other"])
        assert problem is not None and "reader: 1" in problem and "other" not in problem
        assert await deadletters.parked_problem(js, ["other"]) is None

        [letter] = await deadletters.listing(js)
        assert (letter.consumer, letter.subject, letter.origin_stream, letter.origin_seq) == (
            "reader",
            "identity.user.deactivated",
            "IDENTITY",
            1,
        )
        assert letter.reason == "ValueError: cannot apply this" and letter.event["id"] == str(poison.id)

        # Not fixed yet: the re-drive reports the failure and the message stays parked.
        assert await deadletters.redrive(nc, letter) == ("failed", "ValueError: cannot apply this")
        assert (await deadletters.counts(js))["reader"] == 1

        reader.broken_for = "nobody"  # the fix is deployed
        assert await deadletters.redrive(nc, letter) == ("applied", "")
        assert reader.applied == [(str(fine.id), 2), (str(poison.id), 1)]
        assert (await deadletters.counts(js))["reader"] == 0
        assert await deadletters.parked_problem(js, ["reader"]) is None
        # Twice, or from two operators at once: the letter is gone, nothing is applied again.
        assert (await deadletters.redrive(nc, letter))[0] == "missing"
        assert len(reader.applied) == 2


async def test_a_re_drive_for_a_consumer_nobody_runs_says_so(nc: Client, js: JetStreamContext) -> None:
    letter = deadletters.DeadLetter(1, "nobody-runs-me", "identity.user.deactivated", "IDENTITY", 1, "", b"{}")
    status, reason = await deadletters.redrive(nc, letter, wait=1)
    assert status == "unreachable" and "nobody-runs-me" in reason


async def test_a_message_published_with_jetstream_conditions_is_parked_without_them(
    nc: Client, js: JetStreamContext
) -> None:
    """The ledger relay chains its messages (Nats-Expected-Last-Msg-Id): a parked copy must not carry
    that condition to DEADLETTER, where it would be refused and the consumer loop would fail instead."""
    failing = Subscription("IDENTITY", "chained", ("identity.>",), Reader().apply)
    before, poison = deactivated("fine"), deactivated("poison")
    await publish(js, before.type, before.to_bytes(), msg_id=str(before.id))
    headers = {"Nats-Expected-Last-Msg-Id": str(before.id)}  # true on IDENTITY, false on DEADLETTER
    await publish(js, poison.type, poison.to_bytes(), msg_id=str(poison.id), headers=headers)
    async with consuming(nc, js, failing):

        async def parked() -> bool:
            return (await deadletters.counts(js))["chained"] == 1

        await eventually(parked, within=15, what="the poison message parked")
    [letter] = await deadletters.listing(js, "chained")
    assert letter.reason == "ValueError: cannot apply this"
