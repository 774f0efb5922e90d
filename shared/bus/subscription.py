"""What a consumer subscribes with, and what a message must be before any handler sees it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from shared.contracts import Envelope

# Called with the event and its stream sequence (read models use it to keep only the newest state).
Handler = Callable[[Envelope, int], Awaitable[None]]
# Applies several events at once, all or none (one transaction): what a read model does under load.
BatchHandler = Callable[[Sequence[tuple[Envelope, int]]], Awaitable[None]]
# Settles an event its handler failed on every time (a job marked failed, its hold released); when it
# returns, the message is done and is not parked.
GiveUp = Callable[[Envelope, str], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    stream: str
    durable: str
    subjects: tuple[str, ...]
    handler: Handler
    batch_handler: BatchHandler | None = None
    give_up: GiveUp | None = None
    # Messages taken per fetch. A work queue takes one at a time, so several workers share the work
    # instead of one holding a hundred jobs while the others idle.
    fetch: int = 100


class InvalidMessageError(ValueError):
    """Not an event of a contract this code knows: no retry will change that."""


def validated(data: bytes) -> Envelope:
    try:
        envelope = Envelope.from_bytes(data)
        envelope.body()
    except (ValidationError, ValueError) as exc:
        raise InvalidMessageError(f"invalid contract: {exc}") from exc
    return envelope
