"""Every ledger event handler, fed each event twice and out of order, on the real event store."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.ledger import store
from services.ledger.application import Ledger, open_ledger
from services.ledger.domain import CreditAccount
from services.ledger.handlers import handle
from services.ledger.unit_of_work import UnitOfWork
from shared import migrations
from shared.contracts import Envelope, EventData
from shared.contracts import identity as idc
from shared.contracts import media as mc
from shared.contracts import payments as pc
from shared.testing.postgres import fresh_database

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[tuple[Ledger, UnitOfWork]]:
    with fresh_database(database_url) as url:
        await migrations.apply(url, store.SCHEMA, migrations.plan(store.SCHEMA))
        app = await asyncio.to_thread(open_ledger, url)
        dispatcher = UnitOfWork(app)
        task = asyncio.create_task(dispatcher.run())
        try:
            yield app, dispatcher
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            app.close()


def _env(body: EventData, at: datetime = T0) -> Envelope:
    return Envelope.wrap(body, user_id=getattr(body, "user_id", None), occurred_at=at)


def _events(user: str) -> dict[str, Envelope]:
    paid = {"user_id": user, "currency": "USD", "stripe_payment_intent_id": None}
    pay = {**paid, "amount_cents": 999}
    refund = {**paid, "refunded_cents": 999, "credits_clawed_back": 50}
    job = {"user_id": user, "operation": "image_generation"}
    return {
        "registered": _env(
            idc.UserRegistered(user_id=user, clerk_id="c", email="a@b.c", first_name=None, last_name=None, avatar=None)
        ),
        "paid1": _env(pc.PaymentSucceeded(transaction_id="tx1", credits=50, **pay)),
        "refund1": _env(pc.PaymentRefunded(transaction_id="tx1", **refund)),
        "paid2": _env(pc.PaymentSucceeded(transaction_id="tx2", credits=50, **pay)),
        "refund2": _env(pc.PaymentRefunded(transaction_id="tx2", **refund)),
        "renewed": _env(
            pc.SubscriptionRenewed(
                user_id=user,
                subscription_id="s",
                invoice_id="i1",
                credits=100,
                amount_cents=1,
                currency="USD",
                period_start=T0,
                period_end=T0,
            )
        ),
        "req1": _env(mc.JobRequested(job_id="j1", cost=3, resource_type="image", resource_id="r", **job)),
        "done1": _env(mc.JobCompleted(job_id="j1", cost=3, resource_id="r", **job)),
        "req2": _env(mc.JobRequested(job_id="j2", cost=2, resource_type="image", resource_id="r", **job)),
        "done2": _env(mc.JobCompleted(job_id="j2", cost=2, resource_id="r", **job)),
        "req3": _env(mc.JobRequested(job_id="j3", cost=1, resource_type="image", resource_id="r", **job)),
        "failed3": _env(mc.JobFailed(job_id="j3", reason="boom", **job)),
        "req4": _env(mc.JobRequested(job_id="j4", cost=1, resource_type="image", resource_id="r", **job)),
        "cancelled4": _env(mc.JobCancelled(job_id="j4", **job)),
        "deactivated": _env(idc.UserDeactivated(user_id=user), T0 + timedelta(minutes=1)),
        "reactivated": _env(idc.UserReactivated(user_id=user), T0 + timedelta(minutes=2)),
    }


async def _feed(dispatcher: UnitOfWork, *envelopes: Envelope) -> None:
    for envelope in envelopes:
        await handle(dispatcher, envelope, 900)
        await handle(dispatcher, envelope, 900)  # every event is delivered twice


def _effects(app: Ledger, user: str) -> list[tuple[str, Any, Any]]:
    # A low-balance notice is written by the command that crossed, under that command's key.
    events = [e for e in app.repository.event_store.get(uuid.UUID(user)) if not isinstance(e, CreditAccount.BalanceLow)]
    keys = Counter(getattr(e, "idempotency_key", None) for e in events)
    assert all(n == 1 for k, n in keys.items() if k), f"a key produced two events: {keys}"
    return [(type(e).__name__, getattr(e, "amount", None), getattr(e, "idempotency_key", None)) for e in events]


async def test_each_event_twice_and_out_of_order_applies_each_effect_once(ledger: tuple[Ledger, UnitOfWork]) -> None:
    app, dispatcher = ledger
    user = str(uuid.uuid4())
    e = _events(user)
    await _feed(dispatcher, e["registered"], e["paid1"], e["req1"])
    await _feed(dispatcher, e["done2"], e["req2"])  # the completion overtakes its request
    await _feed(dispatcher, e["failed3"], e["req3"])  # so does the failure
    await _feed(dispatcher, e["done1"], e["req4"], e["cancelled4"])
    await _feed(dispatcher, e["refund2"], e["paid2"])  # a refund overtakes its purchase
    await _feed(dispatcher, e["reactivated"], e["deactivated"])  # the newer status arrives first
    account = app.account(user)
    assert account is not None
    assert (account.balance, account.reserved, account.active) == (10 + 50 - 3 - 2, 0, True)

    await _feed(dispatcher, e["renewed"], e["refund1"])  # refund of a purchase partly spent
    account = app.account(user)
    assert account is not None and (account.balance, account.reserved) == (55 + 100 - 50, 0)

    effects = _effects(app, user)
    entries = [(name, amount, key) for name, amount, key in effects if name in ("Granted", "Debited", "Captured")]
    assert entries == [
        ("Granted", 10, "bonus:welcome"),
        ("Granted", 50, "payment:tx1"),
        ("Debited", 2, "job:j2:capture"),
        ("Captured", 3, "job:j1:capture"),
        ("Granted", 100, "subscription:s:i1"),
        ("Debited", 50, "refund:tx1"),
    ]
    holds = [(name, key) for name, _, key in effects if name in ("Reserved", "Released")]
    assert holds == [("Reserved", "job:j1:reserve"), ("Reserved", "job:j4:reserve"), ("Released", "job:j4:release")]


async def test_a_refund_of_spent_credits_takes_what_is_left_and_records_the_shortfall(
    ledger: tuple[Ledger, UnitOfWork],
) -> None:
    app, dispatcher = ledger
    user = str(uuid.uuid4())
    e = _events(user)
    await _feed(dispatcher, e["paid1"], e["req1"], e["done1"], e["refund1"])
    refund = [x for x in app.repository.event_store.get(uuid.UUID(user)) if type(x).__name__ == "Debited"]
    assert [(r.entry_type, r.amount, r.shortfall, r.balance_after) for r in refund] == [("REFUND", 47, 3, 0)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", range(4))
async def test_any_delivery_order_keeps_the_invariants(ledger: tuple[Ledger, UnitOfWork], seed: int) -> None:
    app, dispatcher = ledger
    user = str(uuid.uuid4())
    deliveries = [*_events(user).values()] * 2
    random.Random(seed).shuffle(deliveries)
    for envelope in deliveries:
        await handle(dispatcher, envelope, 900)
    account = app.account(user)
    assert account is not None
    assert account.balance >= 0 and account.available >= 0
    assert account.reserved == 0 and not account.reservations, "every job was settled, whatever the order"
    effects = _effects(app, user)
    for job in ("j1", "j2", "j3", "j4"):
        settled = [k for _, _, k in effects if k and k.startswith(f"job:{job}:") and not k.endswith(":reserve")]
        assert len(settled) == 1
