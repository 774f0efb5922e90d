"""Projection lag: how long after the ledger answers 201 to a debit its entry is in the projections'
read table, which is what a frontend reads. A probe debit starts every `every` seconds (on a
connection of its own, not waiting for the previous one) on an account of its own; the entry id in
the answer is the event id projections store (services/ledger/answers.py)."""

from __future__ import annotations

import asyncio
import json
import time

from psycopg import AsyncConnection

from bench.http_client import Connection, post
from bench.users import User, bearer

POLL_SECONDS = 0.01  # the resolution of every lag figure
GIVE_UP_SECONDS = 30.0


async def probe(
    ledger_port: int, user: User, database_url: str, *, after: float, duration: float, every: float = 0.2
) -> tuple[list[float], int]:
    """Probe for `duration` seconds starting `after` seconds from now: (lags in seconds, never seen)."""
    await asyncio.sleep(after)
    host = f"127.0.0.1:{ledger_port}"
    pending: dict[str, float] = {}  # entry id → when the ledger's 201 arrived
    lags: list[float] = []

    async def debit(n: int) -> None:
        connection = Connection("127.0.0.1", ledger_port)
        headers = {**bearer(user.token), "Idempotency-Key": f"lag-{time.time_ns()}-{n}"}
        try:
            status, body = await connection.send(post(host, f"/api/accounts/{user.user_id}/debits", headers, DEBIT))
        finally:
            await connection.close()
        if status == 201:
            pending[json.loads(body)["id"]] = time.perf_counter()

    async def stamp() -> None:
        started, debits = time.perf_counter(), []
        for n in range(max(1, round(duration / every))):
            await asyncio.sleep(max(0.0, started + n * every - time.perf_counter()))
            debits.append(asyncio.create_task(debit(n)))
        await asyncio.gather(*debits)

    async with await AsyncConnection.connect(database_url, autocommit=True) as db:
        stamping = asyncio.create_task(stamp())
        deadline = time.perf_counter() + duration + GIVE_UP_SECONDS
        while (pending or not stamping.done()) and time.perf_counter() < deadline:
            if pending:
                cursor = await db.execute(
                    "SELECT event_id::text FROM projections.credit_entries WHERE event_id = ANY(%s::uuid[])",
                    (list(pending),),
                )
                seen = time.perf_counter()
                for (entry_id,) in await cursor.fetchall():
                    lags.append(seen - pending.pop(entry_id))
            await asyncio.sleep(POLL_SECONDS)
        await stamping
    return lags, len(pending)


DEBIT = b'{"amount":1}'
