"""`creditstream streams rebuild`: refill NATS streams that were lost (a deleted data directory, a new
cluster) from PostgreSQL, which holds the truth: the ledger's event store and the services' outboxes.

First the relays are sent back to the start (the ledger's stream relay to notification 1, every outbox row
marked unsent), then the streams are created: no relay can publish before they exist, so every event goes
out again in its original order, with its original event id, before anything new. Consumers bind again
from the first message, and their inboxes (and idempotency keys) make what they applied before a no-op.
Refused when the streams hold messages: refilling a live stream would put every event on it twice."""

from __future__ import annotations

import asyncio
import time

import psycopg
from nats.js.errors import NotFoundError
from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from creditstream.connect import connect_nats, stream_replicas
from creditstream.connect import database_url as find_database
from shared import bus
from shared.bus.streams import STREAMS

OUTBOXES = ("identity", "payments", "media")  # the services that publish through an outbox
LEDGER_RELAY = "ledger-stream"  # the ledger's stream relay's position (services/ledger/stream_relay.py)
WAIT_SECONDS = 600


def rebuild(console: Console) -> int:
    database_url = find_database()
    if database_url is None:
        console.print("[red]No database:[/] set DATABASE_URL, or DATA_DIR to where `up` keeps its PostgreSQL.")
        return 2
    return asyncio.run(_rebuild(console, database_url))


async def _rebuild(console: Console, database_url: str) -> int:
    nc = await connect_nats("creditstream-rebuild")
    try:
        js = nc.jetstream()
        held = {}
        for name in STREAMS:
            try:
                held[name] = int((await js.stream_info(name)).state.messages)
            except NotFoundError:  # not there: what a lost stream looks like
                held[name] = 0
        if any(held.values()):
            console.print(f"[red]Refused:[/] the streams hold messages ({held}); rebuild refills lost streams only.",
                          highlight=False)  # fmt: skip
            return 1
        async with await psycopg.AsyncConnection.connect(database_url) as conn, conn.transaction():
            requeued = 0
            for schema in OUTBOXES:
                table = sql.Identifier(schema, "outbox")
                cursor = await conn.execute(sql.SQL("UPDATE {} SET sent_at = NULL").format(table))
                requeued += cursor.rowcount
            # How far it had published: the last notification of a streamed kind (others it passes over).
            cursor = await conn.execute(
                "UPDATE ledger.relay_position r SET position = 0 FROM ledger.relay_position old"
                " WHERE r.name = %s AND old.name = r.name RETURNING old.position",
                (LEDGER_RELAY,),
            )
            row = await cursor.fetchone()
            target = int(row[0]) if row else 0
        await bus.ensure_streams(js, replicas=stream_replicas())
        console.print(f"Streams created; {requeued:,} outbox events and {target:,} ledger notifications to publish"
                      " again, in their order, with their ids.", highlight=False)  # fmt: skip
        return await _wait(console, database_url, target)
    finally:
        await nc.close()


async def _wait(console: Console, database_url: str, target: int) -> int:
    """Until every outbox is sent and the ledger's relay has passed the last notification."""
    deadline = time.monotonic() + WAIT_SECONDS
    columns = (TextColumn("republishing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("republish", total=target or None)
            while time.monotonic() < deadline:
                unsent = 0
                for schema in OUTBOXES:
                    query = sql.SQL("SELECT count(*) FROM {} WHERE sent_at IS NULL").format(
                        sql.Identifier(schema, "outbox"))  # fmt: skip
                    row = await (await conn.execute(query)).fetchone()
                    unsent += int(row[0]) if row else 0
                relay = "SELECT position FROM ledger.relay_position WHERE name = %s"
                row = await (await conn.execute(relay, (LEDGER_RELAY,))).fetchone()
                position = int(row[0]) if row else 0
                progress.update(task, completed=min(position, target))
                if unsent == 0 and position >= target:
                    console.print("[green]Streams refilled from PostgreSQL.[/]")
                    return 0
                await asyncio.sleep(0.25)
    console.print("[red]Not refilled in time:[/] are the services running? Their relays do the publishing.")
    return 1
