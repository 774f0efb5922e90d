"""Debits per second through the ledger's command path (dispatcher → batched save) on real PostgreSQL.

Run by hand: `.venv/bin/python -m tests.bench_ledger [debits] [accounts] [concurrency]`.
Uses $DATABASE_URL if set, else an embedded PostgreSQL in a temp dir.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from services.ledger import commands, store
from services.ledger.answers import answer
from services.ledger.application import Ledger
from services.ledger.unit_of_work import UnitOfWork
from shared import db
from shared.testing.servers import EmbeddedPostgres


async def bench(url: str, debits: int, accounts: int, concurrency: int) -> None:
    await db.migrate(url, store.SCHEMA, store.DDL)
    ledger = await asyncio.to_thread(store.open_ledger, url)
    dispatcher = UnitOfWork(ledger)
    runner = asyncio.create_task(dispatcher.run())
    users = [str(uuid.uuid4()) for _ in range(accounts)]
    for user in users:
        cmd = commands.grant(
            user, entry_type="BONUS", amount=debits, description="", metadata={}, key="s", request_id=None
        )
        await dispatcher.submit(cmd)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with gate:
            cmd = commands.debit(
                users[i % accounts], amount=1, description="", metadata={}, key=f"d{i}", request_id=None
            )
            return answer(await dispatcher.submit(cmd)).status

    started = time.perf_counter()
    statuses = await asyncio.gather(*(one(i) for i in range(debits)))
    elapsed = time.perf_counter() - started
    assert statuses.count(201) == debits
    sequential = 300
    t = time.perf_counter()
    for i in range(sequential):
        spend = commands.debit(users[0], amount=1, description="", metadata={}, key=f"s{i}", request_id=None)
        await dispatcher.submit(spend)
    one_by_one = sequential / (time.perf_counter() - t)
    print(f"{debits} debits over {accounts} accounts, {concurrency} in flight: {debits / elapsed:,.0f} debits/s")
    print(f"one at a time (no batching possible): {one_by_one:,.0f} debits/s")
    runner.cancel()
    await asyncio.to_thread(long_account, ledger)
    ledger.close()


def long_account(ledger: Ledger, entries: int = 100_000, batch: int = 250) -> None:
    """Loading an account with a long history: snapshots keep it to the last few events."""
    user = str(uuid.uuid4())
    seed = commands.grant(user, entry_type="BONUS", amount=entries + 100, description="", metadata={}, key="s",
                          request_id=None)  # fmt: skip
    ledger.execute_batch([seed])
    started = time.perf_counter()
    for b in range(entries // batch):
        ledger.execute_batch(
            [commands.debit(user, amount=1, description="", metadata={}, key=f"{b}.{i}", request_id=None)
             for i in range(batch)]
        )  # fmt: skip
    built = time.perf_counter() - started
    loads = []
    for _ in range(5):
        t = time.perf_counter()
        ledger.account(user)
        loads.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    for i in range(50):
        ledger.execute_batch(
            [commands.debit(user, amount=1, description="", metadata={}, key=f"x{i}", request_id=None)]
        )
    debit_ms = (time.perf_counter() - t) / 50 * 1000
    print(f"account with {entries:,} entries: built in {built:.1f} s; load {min(loads):.1f}-{max(loads):.1f} ms;"
          f" one debit on it {debit_ms:.1f} ms")  # fmt: skip


def main() -> None:
    debits, accounts, concurrency = (int(a) for a in (sys.argv[1:] + ["5000", "100", "256"][len(sys.argv) - 1 :]))
    url = os.environ.get("DATABASE_URL")
    if url:
        asyncio.run(bench(url, debits, accounts, concurrency))
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            asyncio.run(bench(server.url, debits, accounts, concurrency))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
