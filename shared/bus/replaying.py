"""Reading a stream from a given sequence with an ordered push consumer: what a replay or an audit does.
nats-py's pull `fetch` costs an asyncio task per message, three times slower for a whole stream."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

V1_ACK_TOKENS = 9  # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
# An ordered consumer that delivers nothing for this long is given up and made again from where it stopped.
# nats-py resets one itself only when its heartbeats stop; in a cluster, one whose heartbeats go on can
# still deliver nothing (a stream leader killed under it), and an audit waited on it for good.
STALL_SECONDS = 12.0
STALLS_ALLOWED = 5


class StreamStalled(Exception):
    def __init__(self, stream: str, position: int, last: int, stalls: int) -> None:
        super().__init__(
            f"the {stream} stream delivered nothing past sequence {position} of {last} for {STALL_SECONDS:.0f} s,"
            f" {stalls} times over, each time with a new consumer"
        )


def stream_sequence(msg: Msg) -> int:
    """The stream sequence of a JetStream delivery, from its reply subject (what `msg.metadata` parses,
    without the timestamp it also builds for every message)."""
    tokens = (msg.reply or "").split(".")
    return int(tokens[5] if len(tokens) == V1_ACK_TOKENS else tokens[Msg.Ack.StreamSeq])


async def read_range(
    js: JetStreamContext,
    stream: str,
    first: int,
    last: int,
    take: Callable[[Msg, int], Awaitable[None]],
    *,
    tick: Callable[[int], None] | None = None,
    on_stall: Callable[[int], None] | None = None,
    name: str | None = None,
) -> None:
    """Give `take(msg, seq)` every message of `stream` from sequence `first` to `last`, in order, each once,
    however often the consumer behind it is made again. `tick(position)` is called a few times a second (a
    progress bar), `on_stall(position)` when a consumer is given up. Raises StreamStalled when consumer after
    consumer delivers nothing.

    `name`: the consumer's name, for a reader whose NATS user may create only that one (a service, see
    shared/bus/users.py); one left by an earlier read is deleted first. Unnamed, the server names it."""
    if last < first:
        return
    position = first - 1
    done = asyncio.Event()

    async def deliver(msg: Msg) -> None:
        nonlocal position
        seq = stream_sequence(msg)
        if position < seq <= last:  # at most once: a copy from a consumer given up is below `position`
            position = seq
            await take(msg, seq)
        if seq >= last:
            done.set()

    stalls = 0
    while not done.is_set():
        sub = None
        try:
            if name is not None:
                with contextlib.suppress(NotFoundError):
                    await js.delete_consumer(stream, name)
            sub = await js.subscribe(
                f"{stream.lower()}.>", stream=stream, cb=deliver, ordered_consumer=True,
                config=ConsumerConfig(
                    name=name, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=position + 1
                ),
                pending_msgs_limit=-1, pending_bytes_limit=-1,
            )  # fmt: skip
            await _until_done_or_stalled(done, lambda: position, tick)
        except (TimeoutError, NatsError):
            pass  # no consumer could be made (a cluster electing a leader): as a stall, tried again
        finally:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        if not done.is_set():
            stalls += 1
            if stalls > STALLS_ALLOWED:
                raise StreamStalled(stream, position, last, stalls)
            if on_stall is not None:
                on_stall(position)


async def _until_done_or_stalled(
    done: asyncio.Event, position: Callable[[], int], tick: Callable[[int], None] | None
) -> None:
    seen, since = position(), time.monotonic()
    while not done.is_set() and time.monotonic() - since < STALL_SECONDS:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.25)
        if tick is not None:
            tick(position())
        if position() != seen:
            seen, since = position(), time.monotonic()
