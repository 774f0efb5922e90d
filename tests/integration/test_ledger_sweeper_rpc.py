"""Reservation expiry with two sweepers at once, and NATS request/reply, on real PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.ledger import commands, store
from services.ledger.answers import answer
from services.ledger.application import Ledger, open_ledger
from services.ledger.domain import CreditAccount
from services.ledger.rpc import LedgerRpc
from services.ledger.sweeper import Sweeper
from services.ledger.unit_of_work import UnitOfWork
from shared import db, migrations
from shared.testing.nats import EmbeddedNats
from shared.testing.postgres import fresh_database
from tests.ledger_asks import ask

NOW = datetime.now(UTC)


@pytest.fixture
async def two_instances(database_url: str) -> AsyncIterator[list[tuple[Ledger, UnitOfWork, Sweeper]]]:
    """Two ledger applications (as two processes would have) sharing one database."""
    with fresh_database(database_url) as url:
        await migrations.apply(url, store.SCHEMA, migrations.plan(store.SCHEMA))
        pool = await db.open_pool(url, store.SCHEMA)
        instances, tasks = [], []
        for _ in range(2):
            app = await asyncio.to_thread(open_ledger, url)
            dispatcher = UnitOfWork(app)
            tasks.append(asyncio.create_task(dispatcher.run()))
            instances.append((app, dispatcher, Sweeper(app, pool, dispatcher)))
        try:
            yield instances
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for app, _, _ in instances:
                app.close()
            await pool.close()


async def test_two_sweepers_release_each_expired_hold_exactly_once(
    two_instances: list[tuple[Ledger, UnitOfWork, Sweeper]],
) -> None:
    (app, dispatcher, sweeper), (_, _, other) = two_instances
    user = str(uuid.uuid4())
    await dispatcher.submit(
        ask("grant", user, entry_type="BONUS", amount=20, description="", metadata={}, key="g", request_id=None)
    )
    for i, ttl in enumerate([60, 60, 60, 3600]):  # media jobs' holds: only their jobs, or their time, settle them
        key = commands.job_key(f"j{i}", "reserve")
        cmd = commands.HoldForJob(user_id=user, key=key, reservation_id=commands.reservation_id(user, key),
                                  job_id=f"j{i}", cost=2, expires_at=NOW + timedelta(seconds=ttl))  # fmt: skip
        assert answer(await dispatcher.submit(cmd)).status == 201
    later = NOW + timedelta(minutes=5)
    counts = await asyncio.gather(sweeper.sweep_once(later), other.sweep_once(later), sweeper.sweep_once(later))
    assert sum(counts) == 3
    assert await other.sweep_once(later) == 0
    account = app.account(user)
    assert account is not None
    assert (account.balance, account.reserved, account.available) == (20, 2, 18)
    events = app.repository.event_store.get(uuid.UUID(user))
    released = [e for e in events if isinstance(e, CreditAccount.Released)]
    assert sorted(e.job_id or "" for e in released) == ["j0", "j1", "j2"]
    assert all(e.reason == "expired" for e in released)


async def test_request_reply_debits_with_the_same_idempotency_as_http(
    two_instances: list[tuple[Ledger, UnitOfWork, Sweeper]], tmp_path: Path
) -> None:
    server = EmbeddedNats(tmp_path / "nats", harness=True).start()
    nc = await server.connect("tests")
    try:
        for app, dispatcher, _ in two_instances:  # both answer, in one queue group
            await LedgerRpc(app, dispatcher, 900).serve(nc)
        user = str(uuid.uuid4())

        async def call(op: str, **body: object) -> dict:
            reply = await nc.request(f"ledger.rpc.{op}", json.dumps(body).encode(), timeout=30)
            return json.loads(reply.data)

        dispatcher = two_instances[0][1]
        await dispatcher.submit(
            ask("grant", user, entry_type="BONUS", amount=5, description="", metadata={}, key="g", request_id=None)
        )
        answers = await asyncio.gather(*(call("debit", user_id=user, amount=2, key=f"k{i % 3}") for i in range(9)))
        assert sorted(a["status"] for a in answers) == [201] * 6 + [402] * 3
        by_key: dict[int, dict[str, Any]] = {}
        for i, a in enumerate(answers):
            assert by_key.setdefault(i % 3, a) == a, "every retry of a key got its first answer"
        assert (await call("debit", user_id=user, amount=3, key="k0"))["status"] == 409
        assert (await call("reserve", user_id=user, amount=1, key="h", job_id="job-1"))["status"] == 422
        hold = await call("reserve", user_id=user, amount=1, key="h")
        assert hold["status"] == 201 and hold["body"]["job_id"] is None
        rid = hold["body"]["reservation_id"]
        captured = await call("capture", user_id=user, reservation_id=rid, key="c")
        assert (captured["status"], captured["body"]["captured"], captured["body"]["balance"]) == (200, 1, 0)
        assert (await call("release", user_id=user, reservation_id=rid, key="x"))["status"] == 404
        balance = await call("balance", user_id=user)
        assert balance == {
            "status": 200,
            "body": {"user_id": user, "balance": 0, "reserved": 0, "available": 0, "active": True},
        }
        assert (await call("debit", user_id=user, amount=-1, key="bad"))["status"] == 422
        assert (await call("debit", user_id="nobody", amount=1, key="bad"))["status"] == 422
    finally:
        await nc.close()
        server.stop()


async def test_two_sweepers_expire_each_due_lot_once_and_never_what_a_hold_keeps(
    two_instances: list[tuple[Ledger, UnitOfWork, Sweeper]],
) -> None:
    (app, dispatcher, sweeper), (_, _, other) = two_instances
    user = str(uuid.uuid4())

    soon = await _grant(dispatcher, user, "soon", 10, NOW + timedelta(minutes=1))  # spent first
    later = await _grant(dispatcher, user, "later", 10, NOW + timedelta(minutes=2))
    await _grant(dispatcher, user, "forever", 10, None)
    debit = ask("debit", user, amount=4, description="", metadata={}, key="d", request_id=None)
    assert answer(await dispatcher.submit(debit)).status == 201  # 4 of `soon`
    hold = ask("reserve", user, amount=8, ttl_seconds=3600, now=NOW, key="h", request_id=None)
    rid = answer(await dispatcher.submit(hold)).body["reservation_id"]  # 6 of `soon`, 2 of `later`

    after = NOW + timedelta(minutes=5)
    counts = await asyncio.gather(sweeper.sweep_once(after), other.sweep_once(after), sweeper.sweep_once(after))
    assert sum(counts) == 0  # both expiring lots are drawn on by the hold: nothing leaves
    release = ask("release", user, reservation_id=rid, reason="job failed", key="x", request_id=None)
    assert answer(await dispatcher.submit(release)).status == 200
    counts = await asyncio.gather(sweeper.sweep_once(after), other.sweep_once(after), sweeper.sweep_once(after))
    assert sum(counts) == 2
    assert await other.sweep_once(after) == 0

    account = app.account(user)
    assert account is not None
    assert (account.balance, account.reserved) == (10, 0)
    assert [(lot.amount, lot.remaining, lot.expires_at) for lot in account.lots.values()] == [(10, 10, None)]
    events = app.repository.event_store.get(uuid.UUID(user))
    expired = sorted((e.lot_id, e.amount) for e in events if isinstance(e, CreditAccount.Expired))
    assert expired == [(str(soon), 6), (str(later), 10)]


async def test_a_low_balance_and_a_coming_expiry_are_announced_once_however_many_sweepers_run(
    two_instances: list[tuple[Ledger, UnitOfWork, Sweeper]],
) -> None:
    (app, dispatcher, sweeper), (_, _, other) = two_instances
    user = str(uuid.uuid4())

    await _grant(dispatcher, user, "bonus", 11, None)
    for i, amount in enumerate((2, 3, 1, 4)):  # available 11 → 9 → 6 → 5 → 1: crosses below 5 once
        debit = ask("debit", user, amount=amount, description="", metadata={}, key=f"d{i}", request_id=None)
        assert answer(await dispatcher.submit(debit)).status == 201
    soon = NOW + timedelta(days=3)
    await _grant(dispatcher, user, "promo", 3, soon)  # within the 7-day warning
    await _grant(dispatcher, user, "later", 2, NOW + timedelta(days=30))  # not yet
    await asyncio.gather(sweeper.sweep_once(NOW), other.sweep_once(NOW), sweeper.sweep_once(NOW))
    await other.sweep_once(NOW + timedelta(days=1))

    events = list(app.repository.event_store.get(uuid.UUID(user)))  # an iterator otherwise
    low = [(e.available, e.threshold) for e in events if isinstance(e, CreditAccount.BalanceLow)]
    assert low == [(1, 5)]
    expiring = [(e.remaining, e.expires_at) for e in events if isinstance(e, CreditAccount.ExpiringSoon)]
    assert expiring == [(3, soon.isoformat())]


async def _grant(dispatcher: UnitOfWork, user: str, key: str, amount: int, expires_at: datetime | None) -> int:
    """A bonus of `amount` (expiring at `expires_at`, if given); the version of its grant: its lot's id."""
    cmd = ask("grant",
        user, entry_type="BONUS", amount=amount, description="", metadata={}, key=key, request_id=None,
        expires_at=expires_at,
    )  # fmt: skip
    granted = answer(await dispatcher.submit(cmd))
    assert granted.status == 201
    return int(granted.body["version"])


async def test_requests_past_the_bound_are_answered_busy_at_once_and_the_rest_complete(
    database_url: str, tmp_path: Path
) -> None:
    """Two requests in hand (the unit of work not running yet, so they wait); a third is told 503 at once."""
    server = EmbeddedNats(tmp_path / "nats", harness=True).start()
    nc = await server.connect("tests")
    with fresh_database(database_url) as url:
        await migrations.apply(url, store.SCHEMA, migrations.plan(store.SCHEMA))
        app = await asyncio.to_thread(open_ledger, url)
        user = str(uuid.uuid4())
        granting = UnitOfWork(app)
        granter = asyncio.create_task(granting.run())
        grant = ask("grant", user, entry_type="BONUS", amount=5, description="", metadata={}, key="g", request_id=None)
        assert answer(await granting.submit(grant)).status == 201
        granter.cancel()
        await asyncio.gather(granter, return_exceptions=True)
        dispatcher = UnitOfWork(app)
        running: asyncio.Task[None] | None = None
        try:
            await LedgerRpc(app, dispatcher, 900, max_in_flight=2).serve(nc)

            async def call(key: str) -> dict[str, Any]:
                body = {"user_id": user, "amount": 1, "key": key}
                reply = await nc.request("ledger.rpc.debit", json.dumps(body).encode(), timeout=30)
                return json.loads(reply.data)

            held = [asyncio.create_task(call(f"k{i}")) for i in range(2)]
            await nc.flush()
            busy = await asyncio.wait_for(call("k2"), timeout=5)
            assert busy["status"] == 503
            assert "2 requests in hand" in busy["body"]["detail"]
            assert not any(task.done() for task in held), "the two in hand still wait for the unit of work"
            running = asyncio.create_task(dispatcher.run())
            answers = await asyncio.gather(*held)
            assert [a["status"] for a in answers] == [201, 201]
            assert (await call("k3"))["status"] == 201, "room again once they are answered"
            account = app.account(user)
            assert account is not None and account.balance == 2, "the busy request debited nothing"
        finally:
            if running is not None:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
            app.close()
            await nc.close()
            server.stop()
