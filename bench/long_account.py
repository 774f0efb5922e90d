"""An account with a long history (100,000 entries): how long it takes to load, and one debit on it.

Built in a database of its own inside the same PostgreSQL, through the ledger application in this
process (what the old tests/bench_ledger.py did), so the running ledger's relay does not publish
100,000 events into the streams while other figures are read. Snapshots (every 200 events) should
keep both figures close to a fresh account's: the fresh account is measured beside it to show that.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

from services.ledger import store
from services.ledger.application import Command, Ledger, open_ledger
from services.ledger.operations import Asked, command
from services.ledger.schemas import DebitIn, GrantIn
from shared import migrations
from shared.testing.postgres import fresh_database

BATCH = 250  # below the dispatcher's MAX_BATCH (services/ledger/dispatch.py), for the same reason
LOADS = 5
DEBITS = 20


async def measure(database_url: str, entries: int) -> dict[str, float]:
    with fresh_database(database_url) as url:
        await migrations.apply(url, store.SCHEMA, migrations.plan(store.SCHEMA))
        # eventsourcing has no asyncio: the application runs in a thread, as the ledger service runs it.
        return await asyncio.to_thread(_build_and_time, url, entries)


def _build_and_time(url: str, entries: int) -> dict[str, float]:
    ledger = open_ledger(url)
    try:
        long_user, fresh_user = str(uuid.uuid4()), str(uuid.uuid4())
        for user in (long_user, fresh_user):
            ledger.execute_batch([_grant(user, entries + 1000)])
        started = time.perf_counter()
        for b in range(entries // BATCH):
            ledger.execute_batch([_debit(long_user, f"{b}.{i}") for i in range(BATCH)])
        built = time.perf_counter() - started
        long_load, long_debit = _timings(ledger, long_user)
        fresh_load, fresh_debit = _timings(ledger, fresh_user)
    finally:
        ledger.close()
    return {
        "entries": entries // BATCH * BATCH,
        "build_seconds": round(built, 1),
        "load_ms": long_load,
        "debit_ms": long_debit,
        "fresh_load_ms": fresh_load,
        "fresh_debit_ms": fresh_debit,
    }


def _timings(ledger: Ledger, user: str) -> tuple[float, float]:
    """Median milliseconds of loading the account, and of one debit saved on its own."""
    loads, debits = [], []
    for _ in range(LOADS):
        t = time.perf_counter()
        ledger.account(user)
        loads.append(time.perf_counter() - t)
    for i in range(DEBITS):
        t = time.perf_counter()
        ledger.execute_batch([_debit(user, f"one.{i}")])
        debits.append(time.perf_counter() - t)
    return round(statistics.median(loads) * 1000, 2), round(statistics.median(debits) * 1000, 2)


def _grant(user: str, amount: int) -> Command:
    return command("grant", GrantIn.model_construct(type="BONUS", amount=amount), Asked(user, "seed"))


def _debit(user: str, key: str) -> Command:
    return command("debit", DebitIn(amount=1), Asked(user, key))
