"""The streams of SPEC.md, plus the dead-letter stream every consumer parks poison messages in."""

from __future__ import annotations

import logging

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


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
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
