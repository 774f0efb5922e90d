"""Reading a stream range (what the audit and the projections replay do): every message once and in
order, however often the consumer behind it is given up; and a clear failure, not a wait without end,
when nothing more comes."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared.bus import publish, replaying
from shared.bus.replaying import StreamStalled, read_range


async def fill(js: JetStreamContext, count: int) -> int:
    """`count` messages on LEDGER; answers the sequence of the last."""
    for i in range(count):
        await publish(js, "ledger.credits.test", str(i).encode(), msg_id=f"read-range-{i}")
    return int((await js.stream_info("LEDGER")).state.last_seq)


async def test_a_consumer_given_up_midway_is_made_again_from_where_it_stopped_and_nothing_comes_twice(
    js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replaying, "STALL_SECONDS", 0.3)
    last = await fill(js, 40)
    taken: list[int] = []
    stalls: list[int] = []

    async def take(msg: Msg, seq: int) -> None:
        taken.append(seq)
        if seq == 10 and 10 not in stalls:
            await asyncio.sleep(1.0)  # no progress past 10 for longer than a stall: the consumer is given up

    await asyncio.wait_for(read_range(js, "LEDGER", 3, last, take, on_stall=stalls.append), timeout=30)
    assert taken == list(range(3, last + 1))
    assert 10 in stalls  # (a slow start may add one at 2, before anything came)


async def test_a_range_past_the_end_of_the_stream_fails_after_a_bounded_number_of_new_consumers(
    js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replaying, "STALL_SECONDS", 0.2)
    last = await fill(js, 5)
    taken: list[int] = []
    stalls: list[int] = []

    async def take(msg: Msg, seq: int) -> None:
        taken.append(seq)

    with pytest.raises(StreamStalled, match=f"past sequence {last} of {last + 3}"):
        await asyncio.wait_for(read_range(js, "LEDGER", 1, last + 3, take, on_stall=stalls.append), timeout=30)
    assert taken == list(range(1, last + 1))
    assert len(stalls) == replaying.STALLS_ALLOWED
    assert stalls[-1] == last
