"""Rebuilding the read models blue/green while the service keeps serving them.

The next version is built in a schema of its own (`projections_next`: the same tables, its own inbox and
tracking positions) by reading every stream from sequence 1 through the same `apply` the live consumers use.
Then the swap, in one transaction that holds the apply lock exclusively (every live batch holds it shared, so
none is half-way): the events that arrived since are applied to the next version too, and its rows replace the
live ones, table by table. Readers wait for that commit and never see an error or a half-built model; the live
consumers go on from where they were, and the inbox, copied with the rows, makes them skip what the rebuild
already applied. Nothing is lost (the rebuild reads up to the streams' last message inside the lock) and
nothing is applied twice (the inbox).

The read models' tables are one unit: the consumers of the four streams share them (an activity line may come
from any stream), so `projections` is the one read model there is to replay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from services.projections import store
from services.projections.projection import CONSUMERS, apply_events
from shared import db, migrations
from shared.bus.replaying import read_range
from shared.bus.users import replay_consumer
from shared.contracts import Envelope

log = logging.getLogger(__name__)
NEXT = "projections_next"
SERVICE_USER = "projections"
BATCH = 500
# Every table the consumers write (not the stream tickets: those are the API's, not a read model's).
TABLES = (
    "users", "balances", "credit_entries", "transactions", "subscriptions", "media_jobs", "activity", "lots", "feed",
    "feed_heads", "positions", "inbox", "organizations", "org_members", "member_limits",
    "usage_caps", "finance_lots", "finance_entries",
)  # fmt: skip


@dataclass
class Progress:
    state: str = "idle"  # idle | rebuilding | swapping | done | failed
    applied: int = 0
    total: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float | None = None
    error: str | None = None
    streams: dict[str, int] = field(default_factory=dict)  # how far the rebuild read each stream

    def public(self) -> dict[str, Any]:
        return asdict(self)


class Replayer:
    def __init__(self, database_url: str, schema: str, pool: AsyncConnectionPool, nc: Client) -> None:
        self._database_url = database_url
        self._schema = schema  # the live one
        self._pool = pool
        self._nc = nc
        self.progress = Progress()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> Progress:
        """Begin a replay in the background (one at a time: the caller checks `running`)."""
        self.progress = Progress(state="rebuilding", started_at=datetime.now(UTC))
        self._task = asyncio.create_task(self._run(), name="projections-replay")
        return self.progress

    async def _run(self) -> None:
        began = time.perf_counter()
        try:
            await self._rebuild()
            self.progress.state = "swapping"
            await self._swap()
            self.progress.state = "done"
        except Exception as exc:
            log.exception("projections replay failed; the live read models are as they were")
            self.progress.state, self.progress.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.progress.finished_at = datetime.now(UTC)
            self.progress.seconds = round(time.perf_counter() - began, 3)
            with contextlib.suppress(Exception):
                await _drop(self._database_url, NEXT)

    async def _rebuild(self) -> None:
        await _drop(self._database_url, NEXT)
        await migrations.apply(self._database_url, NEXT, migrations.plan("projections"))
        js = self._nc.jetstream()
        lasts = {stream: int((await js.stream_info(stream)).state.last_seq) for stream, _ in CONSUMERS}
        self.progress.total = sum(lasts.values())
        next_pool = await db.open_pool(self._database_url, NEXT, max_size=2)
        try:
            for stream, durable in CONSUMERS:
                async with next_pool.connection() as conn:
                    await self._read(conn, stream, durable, 1, lasts[stream])
        finally:
            await next_pool.close()
        self.progress.streams = lasts

    async def _swap(self) -> None:
        """Inside the apply lock: the rest of every stream into the next version, then its rows over the live
        ones, all in one transaction."""
        js = self._nc.jetstream()
        async with self._pool.connection() as live, live.transaction():
            await store.lock_apply(live, exclusive=True)
            next_conn = await AsyncConnection.connect(db.schema_conninfo(self._database_url, NEXT))
            try:
                for stream, durable in CONSUMERS:
                    last = int((await js.stream_info(stream)).state.last_seq)
                    self.progress.total += max(0, last - self.progress.streams[stream])
                    await self._read(next_conn, stream, durable, self.progress.streams[stream] + 1, last)
                    self.progress.streams[stream] = last
            finally:
                await next_conn.close()
            for table in TABLES:
                await _replace(live, self._schema, table)

    async def _read(self, conn: AsyncConnection, stream: str, durable: str, first: int, last: int) -> None:
        """Apply stream messages `first`..`last` through the live handlers, in batches of one transaction."""
        if last < first:
            return
        queue: asyncio.Queue[tuple[Envelope, int] | None] = asyncio.Queue()

        async def take(msg: Msg, seq: int) -> None:
            queue.put_nowait((Envelope.from_bytes(msg.data), seq))

        name = replay_consumer(SERVICE_USER, stream)  # the one its NATS user may create on `stream`
        reader = asyncio.create_task(read_range(self._nc.jetstream(), stream, first, last, take, name=name))
        reader.add_done_callback(lambda _: queue.put_nowait(None))  # read to `last`, or failed
        try:
            ended = False
            while not ended:
                item = await queue.get()
                batch: list[tuple[Envelope, int]] = []
                while item is not None:
                    batch.append(item)
                    if len(batch) >= BATCH or queue.empty():
                        break
                    item = queue.get_nowait()
                else:
                    ended = True
                if batch:
                    async with conn.transaction():
                        await apply_events(conn, durable, stream, batch)
                    self.progress.applied += len(batch)
            await reader  # raises what stopped it short of `last`
        finally:
            reader.cancel()


async def _replace(live: AsyncConnection, schema: str, table: str) -> None:
    columns = await _columns(live, NEXT, table)
    names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    target, source = sql.Identifier(schema, table), sql.Identifier(NEXT, table)
    await live.execute(sql.SQL("TRUNCATE {}").format(target))
    await live.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(target, names, names, source))


async def _columns(conn: AsyncConnection, schema: str, table: str) -> Sequence[str]:
    cursor = await conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
        " ORDER BY ordinal_position",
        (schema, table),
    )
    return [str(row[0]) for row in await cursor.fetchall()]


async def _drop(database_url: str, schema: str) -> None:
    """Every table of `schema`, not the schema: projections' role owns it but may not create schemas."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cursor = await conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
        for (table,) in await cursor.fetchall():
            await conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(schema, table)))
