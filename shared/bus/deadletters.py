"""Dead letters: messages a consumer gave up on, parked on DEADLETTER as
`deadletter.<consumer>.<original subject>` with why, and where they came from.

A parked message is an alarm, not a silent loss: the consuming service's GET /alarms names it while
any of its consumers has one (its /readyz stays 200: it serves the rest), `creditstream deadletters` lists
them, and after a fix re-drives each to the consumer that gave up on it. The re-drive is a request on
`creditstream.redrive.<consumer>` (core NATS, queue group): one copy of that service applies the parked
message through the same handler (whose inbox makes a second application a no-op), then deletes it from
DEADLETTER.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.bus.publisher import publish
from shared.bus.subscription import Subscription, validated

log = logging.getLogger(__name__)

STREAM = "DEADLETTER"
REASON = "Deadletter-Reason"
CONSUMER = "Deadletter-Consumer"
ORIGIN_STREAM = "Deadletter-Stream"
ORIGIN_SEQUENCE = "Deadletter-Sequence"


def subject_for(durable: str, subject: str) -> str:
    return f"deadletter.{durable}.{subject}"


def redrive_subject(durable: str) -> str:
    return f"creditstream.redrive.{durable}"


async def park(js: JetStreamContext, msg: Msg, durable: str, reason: str) -> None:
    """Copy `msg` to DEADLETTER (once, whatever the retries: its message id is its origin)."""
    origin_stream, origin_seq = msg.metadata.stream, msg.metadata.sequence.stream
    # JetStream's own headers (Nats-Msg-Id, Nats-Expected-Last-Msg-Id, ...) were conditions for the
    # original stream: carried over, they would make DEADLETTER refuse the copy.
    kept = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
    headers = {
        **kept,
        REASON: reason[:500],
        CONSUMER: durable,
        ORIGIN_STREAM: origin_stream,
        ORIGIN_SEQUENCE: str(origin_seq),
    }
    msg_id = f"{durable}:{origin_stream}:{origin_seq}"
    await publish(js, subject_for(durable, msg.subject), msg.data, msg_id=msg_id, headers=headers)


@dataclass(frozen=True)
class DeadLetter:
    seq: int  # on DEADLETTER
    consumer: str
    subject: str  # where it was published first
    origin_stream: str
    origin_seq: int
    reason: str
    data: bytes

    @property
    def event(self) -> dict[str, object]:
        """The envelope's id and type, if it has any."""
        with contextlib.suppress(ValueError):
            value = json.loads(self.data)
            if isinstance(value, dict):
                return {"id": value.get("id"), "type": value.get("type")}
        return {}


async def counts(js: JetStreamContext) -> Counter[str]:
    """Parked messages per consumer."""
    info = await js.stream_info(STREAM, subjects_filter="deadletter.>")
    parked: Counter[str] = Counter()
    for subject, n in (info.state.subjects or {}).items():
        parked[subject.split(".", 2)[1]] += n
    return parked


async def listing(js: JetStreamContext, consumer: str | None = None, limit: int = 1000) -> list[DeadLetter]:
    wanted = f"deadletter.{consumer}.>" if consumer else "deadletter.>"
    found: list[DeadLetter] = []
    seq = 1
    while len(found) < limit:
        try:
            raw = await js.get_msg(STREAM, seq=seq, next=True, subject=wanted)
        except NotFoundError:
            break
        assert raw.seq is not None
        found.append(_letter(raw.seq, raw.subject or "", raw.headers or {}, raw.data or b""))
        seq = raw.seq + 1
    return found


def _letter(seq: int, subject: str, headers: dict[str, str], data: bytes) -> DeadLetter:
    _, durable, origin = subject.split(".", 2)
    return DeadLetter(
        seq=seq,
        consumer=headers.get(CONSUMER, durable),
        subject=origin,
        origin_stream=headers.get(ORIGIN_STREAM, ""),
        origin_seq=int(headers.get(ORIGIN_SEQUENCE, "0") or 0),
        reason=headers.get(REASON, ""),
        data=data,
    )


async def parked_problem(js: JetStreamContext, durables: Iterable[str]) -> str | None:
    """Why a service is not ready because of its dead letters, or None."""
    parked = await counts(js)
    mine = {d: parked[d] for d in durables if parked[d]}
    if not mine:
        return None
    listed = ", ".join(f"{d}: {n}" for d, n in sorted(mine.items()))
    return f"dead-lettered messages wait for a fix and `creditstream deadletters redrive` ({listed})"


class Redriver:
    """Answers re-drive requests for one consumer: apply the parked message, then delete it."""

    def __init__(self, js: JetStreamContext, subscription: Subscription) -> None:
        self._js = js
        self._sub = subscription

    async def run(self, nc: Client) -> None:
        sub = await nc.subscribe(redrive_subject(self._sub.durable), queue=self._sub.durable, cb=self._on_request)
        try:
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_request(self, msg: Msg) -> None:
        try:
            seq = int(json.loads(msg.data)["seq"])
        except (ValueError, KeyError, TypeError):
            await _reply(msg, "refused", "the request names no dead letter (seq)")
            return
        status, reason = await self.redrive(seq)
        await _reply(msg, status, reason)

    async def redrive(self, seq: int) -> tuple[str, str]:
        try:
            raw = await self._js.get_msg(STREAM, seq=seq)
        except NotFoundError:
            return "missing", f"no dead letter {seq} (already re-driven?)"
        letter = _letter(seq, raw.subject or "", raw.headers or {}, raw.data or b"")
        if letter.consumer != self._sub.durable:
            return "refused", f"dead letter {seq} belongs to {letter.consumer}"
        try:
            envelope = validated(letter.data)
            await self._sub.handler(envelope, letter.origin_seq)
        except Exception as exc:
            log.warning("%s: re-drive of dead letter %d failed: %s", self._sub.durable, seq, exc)
            return "failed", f"{type(exc).__name__}: {exc}"[:500]
        await self._js.delete_msg(STREAM, seq)
        log.info("%s: dead letter %d re-driven and applied", self._sub.durable, seq)
        return "applied", ""


async def _reply(msg: Msg, status: str, reason: str) -> None:
    if msg.reply:
        await msg.respond(json.dumps({"status": status, "reason": reason}).encode())


async def redrive(nc: Client, letter: DeadLetter, wait: float = 30.0) -> tuple[str, str]:
    """Ask the consumer that parked `letter` to apply it: (status, reason)."""
    try:
        reply = await nc.request(redrive_subject(letter.consumer), json.dumps({"seq": letter.seq}).encode(), wait)
    except Exception as exc:  # no responders, timeout: the consuming service is not running
        return "unreachable", f"{letter.consumer} did not answer: {type(exc).__name__}"
    answer = json.loads(reply.data)
    return str(answer["status"]), str(answer.get("reason", ""))
