"""`creditstream audit`: prove every balance. Recomputes each account from the LEDGER stream (from sequence
1) and compares it with the ledger's own accounts and event-store history (its API) and with the projections
read models (their tables): every credit entry, in order, with its amount and balance after; each balance and
reserved figure; every stored entry on the stream exactly once; and the finance read model's cents sold,
recognised, broken and refunded per month and currency, recounted from the stream (shared/finance.py). Exit 0
when all agree, 1 on any difference (each named with its account, what was expected and found, and the first
event where they part).

It reads the stream up to its last message when it starts and waits (bounded) for projections to apply that
far, so a system that is running still audits clean; an account whose ledger moved on meanwhile is audited
up to what the stream held."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from nats.aio.msg import Msg
from psycopg.rows import dict_row
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from creditstream import connect
from creditstream.connect import connect_nats, service_token, service_urls
from shared.bus.replaying import StreamStalled, read_range
from shared.contracts import ledger as lc
from shared.db import schema_conninfo
from shared.finance import Book, Kind
from shared.scopes import Scope

PROJECTIONS_WAIT_SECONDS = 30
# A credit entry as all three sources show it: (event id, type, amount, balance after).
Entry = tuple[str, str, int, int]
CREDIT_TYPES = {lc.CreditsGranted.type, lc.CreditsDebited.type, lc.CreditsExpired.type, lc.CreditsCaptured.type}
HOLD_TYPES = {lc.CreditsReserved.type, lc.CreditsReleased.type, lc.CreditsCaptured.type}


@dataclass
class Account:
    """One account as the stream tells it."""

    entries: list[Entry] = field(default_factory=list)
    balance: int = 0
    reserved: int = 0
    broken_chain: str | None = None  # the first entry whose balance after is not the sum before it


@dataclass(frozen=True)
class Mismatch:
    user_id: str
    what: str
    expected: Any
    found: Any
    first_event: str | None


@dataclass
class Report:
    events: int = 0
    repeated: int = 0  # messages that repeat an event already read, byte for byte (a transport duplicate)
    seconds: float = 0.0
    accounts: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)


def run(console: Console) -> int:
    database_url = connect.database_url()
    if database_url is None:
        console.print("[red]No database:[/] set DATABASE_URL, or DATA_DIR to where `up` keeps its PostgreSQL.")
        return 2
    token = service_token("creditstream-audit", audience="ledger", scopes=[Scope.LEDGER_READ])
    if token is None:
        console.print("[red]No service key:[/] set SERVICE_JWT_PRIVATE_KEY, or DATA_DIR to where `up` keeps its key.")
        return 2
    try:
        report = asyncio.run(audit(console, database_url, token))
    except StreamStalled as stalled:
        console.print(f"[red]Cannot audit:[/] {stalled}.", highlight=False)
        return 2
    record(database_url, report)
    rate = report.events / report.seconds if report.seconds else 0
    console.print(
        f"{report.events:,} LEDGER events read in {report.seconds:.2f} s ({rate:,.0f} events/s);"
        f" {report.accounts:,} accounts compared.",
        highlight=False,
    )
    if report.repeated:
        console.print(f"{report.repeated:,} repeated an event already read (the same bytes): skipped, as readers do.")
    if not report.mismatches:
        console.print("[green]Stream, event store, ledger accounts and projections agree.[/]")
        return 0
    for m in report.mismatches:
        first = f"; first diverging event {m.first_event}" if m.first_event else ""
        console.print(
            f"[red]MISMATCH[/] account {m.user_id}: {m.what}: expected {m.expected}, found {m.found}{first}",
            highlight=False,
        )
    console.print(f"[red]{len(report.mismatches)} difference(s).[/]")
    return 1


def record(database_url: str, report: Report) -> None:
    """The verdict, for the ledger's /metrics (creditstream_audit_*) and the alert on a failing audit."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ledger.audit_runs (events, accounts, discrepancies) VALUES (%s, %s, %s)",
            (report.events, report.accounts, len(report.mismatches)),
        )


async def audit(console: Console, database_url: str, token: str) -> Report:
    report = Report()
    started = time.perf_counter()
    accounts, book, last_seq = await read_stream(console, report)
    report.seconds = time.perf_counter() - started
    report.accounts = len(accounts)
    projected = await read_projections(database_url, last_seq)
    report.mismatches += compare_finance(book, await read_finance(database_url, last_seq))
    async with httpx.AsyncClient(base_url=service_urls()["ledger"], timeout=60,
                                 headers={"Authorization": f"Bearer {token}"}) as ledger:  # fmt: skip
        users = sorted(set(accounts) | set(projected))
        for user_id in users:
            stream = accounts.get(user_id, Account())
            if stream.broken_chain:
                report.mismatches.append(Mismatch(user_id, "stream: balance after is not the running sum",
                                                  "a consistent chain", "a break", stream.broken_chain))  # fmt: skip
            held = await read_ledger(ledger, user_id)
            report.mismatches += compare(user_id, stream, held, projected.get(user_id), last_seq)
    return report


async def read_stream(console: Console, report: Report) -> tuple[dict[str, Account], Book, int]:
    """Every account as the LEDGER stream tells it, from sequence 1 to the last message when we began,
    applied as it arrives (see shared/bus/replaying.py), and what its credits are worth (the finance book)."""
    nc = await connect_nats("creditstream-audit", pending_size=64 * 1024 * 1024)
    accounts: defaultdict[str, Account] = defaultdict(Account)
    book = Book()
    seen: dict[str, tuple[int, int]] = {}
    try:
        js = nc.jetstream()
        last = int((await js.stream_info("LEDGER")).state.last_seq)

        async def take(msg: Msg, seq: int) -> None:
            report.events += 1
            report.repeated += apply(accounts, seen, msg.data, seq, book)

        def stalled(position: int) -> None:
            console.print(f"[yellow]The LEDGER stream delivered nothing past {position:,} for a while:"
                          " reading on from there with a new consumer.[/]", highlight=False)  # fmt: skip

        columns = (TextColumn("LEDGER stream"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("read", total=last)
            await read_range(js, "LEDGER", 1, last, take, on_stall=stalled,
                             tick=lambda position: progress.update(task, completed=position))  # fmt: skip
    finally:
        await nc.close()
    return dict(accounts), book, last


def apply(
    accounts: defaultdict[str, Account], seen: dict[str, tuple[int, int]], raw: bytes, seq: int, book: Book
) -> bool:
    """One stream message into its account (plain JSON: validating every message would halve the speed;
    the contracts were checked when they were published). True when it repeats, byte for byte, an event
    already read: delivery is at least once and every reader skips such a copy by its event id, so the
    audit does too. The same id with other content is a break in the history."""
    envelope = json.loads(raw)
    kind, data = envelope["type"], envelope["data"]
    if kind not in CREDIT_TYPES and kind not in HOLD_TYPES:
        return False
    account = accounts[data["user_id"]]
    if (first := seen.get(envelope["id"])) is not None:
        if first[1] == hash(raw):
            return True
        account.broken_chain = account.broken_chain or f"{envelope['id']} (two different events: {first[0]}, {seq})"
        return False
    seen[envelope["id"]] = (seq, hash(raw))
    if kind in HOLD_TYPES:
        account.reserved = int(data["reserved_after"])
    if kind not in CREDIT_TYPES:
        return False
    entry_type, amount = data.get("entry_type", "USAGE"), int(data["amount"])
    value(book, kind, data, envelope["occurred_at"])
    if kind == lc.CreditsCaptured.type:
        if amount == 0:
            return False  # an empty capture writes no line
        amount = -amount
    elif kind != lc.CreditsGranted.type:
        amount = -amount
    account.balance += amount
    if account.balance != int(data["balance_after"]) and account.broken_chain is None:
        account.broken_chain = envelope["id"]
    account.entries.append((envelope["id"], entry_type, amount, int(data["balance_after"])))
    return False


def value(book: Book, kind: str, data: dict[str, Any], occurred_at: str) -> None:
    """A credit entry's movement of value, as the finance read model should have counted it."""
    month = datetime.fromisoformat(occurred_at).astimezone(UTC).strftime("%Y-%m")
    account = data["user_id"]
    if kind == lc.CreditsGranted.type:
        if data.get("lot_id") is not None:
            book.granted(account, data["lot_id"], int(data["amount"]), int(data.get("value_cents") or 0),
                         data.get("currency"), month)  # fmt: skip
    elif kind == lc.CreditsExpired.type:
        book.taken(account, "EXPIRED", {data["lot_id"]: int(data["amount"])}, month)
    elif data.get("lots"):
        book.taken(account, data.get("entry_type", "USAGE"), {k: int(v) for k, v in data["lots"].items()}, month)


async def read_finance(database_url: str, last_seq: int) -> dict[tuple[str, str, Kind], int]:
    """The finance read model's totals by (month, currency, kind), of the stream up to `last_seq` (the
    projections have applied that far: read_projections waited)."""
    conninfo = schema_conninfo(database_url, "projections")
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        rows = await (await conn.execute(
            "SELECT month, currency, kind, SUM(cents) FROM finance_entries WHERE seq <= %s GROUP BY 1, 2, 3",
            (last_seq,),
        )).fetchall()  # fmt: skip
    return {(month, currency, Kind(kind)): int(cents) for month, currency, kind, cents in rows}


def compare_finance(book: Book, found: dict[tuple[str, str, Kind], int]) -> list[Mismatch]:
    """Every month's sold, recognised, breakage and refunded cents, per currency, as the stream says."""
    expected = {key: cents for key, cents in book.totals.items() if cents}
    found = {key: cents for key, cents in found.items() if cents}
    differing = sorted(key for key in set(expected) | set(found) if expected.get(key, 0) != found.get(key, 0))
    return [
        Mismatch("finance", f"{month} {currency} {kind.value} cents", expected.get(key, 0), found.get(key, 0), None)
        for key in differing
        for month, currency, kind in [key]
    ]


async def read_projections(database_url: str, last_seq: int) -> dict[str, dict[str, Any]]:
    """The projections' balances and credit logs, once they have applied the stream up to `last_seq`."""
    conninfo = schema_conninfo(database_url, "projections")
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        deadline = time.monotonic() + PROJECTIONS_WAIT_SECONDS
        while time.monotonic() < deadline:
            row = await (await conn.execute(
                "SELECT stream_seq FROM positions WHERE consumer = 'projections-ledger'")).fetchone()  # fmt: skip
            if row is None or row[0] >= last_seq:
                break
            await asyncio.sleep(0.2)
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT user_id::text AS user_id, balance, reserved, last_seq FROM balances")
            found: dict[str, dict[str, Any]] = {r["user_id"]: {**r, "entries": []} for r in await cur.fetchall()}
            await cur.execute(
                "SELECT user_id::text AS user_id, event_id::text AS id, entry_type, amount, balance_after"
                " FROM credit_entries WHERE seq <= %s ORDER BY seq",
                (last_seq,),
            )
            for r in await cur.fetchall():
                account = found.setdefault(r["user_id"], {"balance": None, "reserved": None, "last_seq": None,
                                                          "entries": []})  # fmt: skip
                account["entries"].append((r["id"], r["entry_type"], int(r["amount"]), int(r["balance_after"])))
    return found


async def read_ledger(ledger: httpx.AsyncClient, user_id: str) -> dict[str, Any]:
    """The ledger's account and its whole history from the event store, oldest first."""
    account = (await ledger.get(f"/api/accounts/{user_id}")).json()
    entries: list[Entry] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = (await ledger.get(f"/api/accounts/{user_id}/entries", params=params)).json()
        entries += [(e["id"], e["type"], int(e["amount"]), int(e["balance_after"])) for e in page["entries"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return {"balance": account.get("balance"), "reserved": account.get("reserved"), "entries": entries[::-1]}


def compare(
    user_id: str, stream: Account, ledger: dict[str, Any], projected: dict[str, Any] | None, stream_end: int
) -> list[Mismatch]:
    found: list[Mismatch] = []
    # The ledger may have moved on since the stream was read: audit it up to what the stream held.
    held = ledger["entries"]
    if stream.entries and stream.entries[-1] in held:
        held = held[: held.index(stream.entries[-1]) + 1]
    for source, entries in (("ledger event store", held), ("projections", (projected or {}).get("entries", []))):
        if entries != stream.entries:
            first = _first_difference(stream.entries, entries)
            found.append(Mismatch(user_id, f"{source} entries", f"{len(stream.entries)} as on the stream",
                                  f"{len(entries)}, differing", first))  # fmt: skip
    if held == ledger["entries"] and ledger["balance"] != stream.balance:  # not moved on: the stream's balance
        found.append(Mismatch(user_id, "ledger balance", stream.balance, ledger["balance"], _last(stream)))
    if projected is None:
        if stream.entries:
            found.append(Mismatch(user_id, "projections balance", stream.balance, "no row", _last(stream)))
    elif projected["last_seq"] is None or projected["last_seq"] <= stream_end:  # not moved on past the stream read
        for what, expected in (("balance", stream.balance), ("reserved", stream.reserved)):
            if projected[what] != expected:
                found.append(Mismatch(user_id, f"projections {what}", expected, projected[what], _last(stream)))
    return found


def _first_difference(expected: list[Entry], found: list[Entry]) -> str | None:
    for want, got in zip(expected, found, strict=False):
        if want != got:
            return want[0]
    longer = expected if len(expected) > len(found) else found
    return longer[min(len(expected), len(found))][0] if len(expected) != len(found) else None


def _last(account: Account) -> str | None:
    return account.entries[-1][0] if account.entries else None
