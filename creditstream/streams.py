"""`creditstream streams`: each stream's size and each durable consumer's progress."""

from __future__ import annotations

import asyncio
import os

from rich.console import Console
from rich.table import Table

from shared import bus


async def _collect() -> tuple[list[tuple[str, int, int, int]], list[tuple[str, str, int, int, int]]]:
    nc = await bus.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"), name="creditstream-cli")
    try:
        js = nc.jetstream()
        streams, consumers = [], []
        for name in bus.STREAMS:
            info = await js.stream_info(name)
            streams.append((name, info.state.messages, info.state.first_seq, info.state.last_seq))
            for c in await js.consumers_info(name):
                consumers.append((name, c.name, c.delivered.stream_seq, c.num_pending or 0, c.num_ack_pending or 0))
        return streams, consumers
    finally:
        await nc.drain()


def show(console: Console) -> int:
    streams, consumers = asyncio.run(_collect())
    table = Table(title="streams")
    for column in ("stream", "messages", "first seq", "last seq"):
        table.add_column(column)
    for row in streams:
        table.add_row(*map(str, row))
    console.print(table)
    table = Table(title="consumers")
    for column in ("stream", "consumer", "delivered seq", "pending", "awaiting ack"):
        table.add_column(column)
    for row in consumers:
        table.add_row(*map(str, row))
    console.print(table)
    return 0
