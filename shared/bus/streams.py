"""The streams of SPEC.md, plus the dead-letter stream every consumer parks poison messages in."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

STREAMS: dict[str, list[str]] = {
    "IDENTITY": ["identity.>"],
    # Not `ledger.>`: the ledger's request/reply subjects (`ledger.rpc.*`) must not be captured.
    "LEDGER": ["ledger.credits.>", "ledger.debit.>", "ledger.balance.>"],
    "PAYMENTS": ["payments.>"],
    "MEDIA": ["media.>"],
    # Media's work queue: reserved jobs waiting for a worker (consumed by media's workers only).
    "MEDIAWORK": ["mediawork.>"],
    "DEADLETTER": ["deadletter.>"],
}
DUPLICATE_WINDOW_SECONDS = 300.0
# How long a starting service waits for `ops` to create the streams it uses before it gives up.
STREAMS_WAIT_SECONDS = 60.0


def stream_of(subject: str) -> str:
    """The stream that stores `subject` (or a pattern of it, such as `payments.>`)."""
    prefix = subject.removesuffix(".>")
    for name, subjects in STREAMS.items():
        if any(prefix == s.removesuffix(".>") or prefix.startswith(s.removesuffix(">")) for s in subjects):
            return name
    raise KeyError(f"no stream stores {subject!r}")


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create or update every stream: for `ops` (the CLI, `creditstream up`, the test fixtures) only; a
    service may not (shared/bus/users.py) and waits for them instead (`require_streams`)."""
    for name, subjects in STREAMS.items():
        config = StreamConfig(
            name=name,
            subjects=subjects,
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            discard=DiscardPolicy.OLD,
        )
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("created stream %s", name)
        else:
            await js.update_stream(config)


async def require_streams(js: JetStreamContext, names: Iterable[str], within: float = STREAMS_WAIT_SECONDS) -> None:
    """Until each of `names` exists: at a service's start, `ops` may still be creating them."""
    missing = list(names)
    deadline = time.monotonic() + within
    while missing:
        try:
            await js.stream_info(missing[0])
        except NotFoundError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"stream {missing[0]} does not exist: `creditstream streams ensure` creates the streams"
                ) from None
            log.warning("waiting for stream %s (created by ops: `creditstream streams ensure`)", missing[0])
            await asyncio.sleep(1.0)
            continue
        missing.pop(0)
