"""Projections' read models against real PostgreSQL: a user's whole history (sign-in, a purchase, media
jobs, a refund, a subscription, notifications, an expiry) applied in stream order, and again shuffled with
every event delivered twice, leaves the same tables, and the queries the dashboard reads say what happened."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from services.projections import projection, queries, store
from shared.contracts import Envelope, EventData
from shared.contracts import identity as idc
from shared.contracts import ledger as lc
from shared.contracts import media as mc
from shared.contracts import payments as pc
from tests.integration.conftest import make_pool

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
TABLES = {
    "users": "user_id", "balances": "user_id", "credit_entries": "seq", "transactions": "id",
    "subscriptions": "id", "media_jobs": "job_id", "activity": "event_id", "lots": "user_id, lot_id",
}  # fmt: skip


def history(user: str) -> list[tuple[str, Envelope, int]]:
    """(stream, envelope, stream sequence) of one user's history, in stream order per stream."""
    seqs: dict[str, int] = {}
    events: list[tuple[str, Envelope, int]] = []
    ledger = {"idempotency_key": "k", "cause_id": None}

    def add(stream: str, body: EventData) -> None:
        seqs[stream] = seqs.get(stream, 0) + 1
        at = T0 + timedelta(minutes=len(events))
        events.append((stream, Envelope.wrap(body, user_id=user, occurred_at=at), seqs[stream]))

    def entry(kind: type[lc._Entry], entry_type: str, amount: int, after: int, **extra: Any) -> lc._Entry:
        return kind(user_id=user, entry_type=lc.EntryType(entry_type), amount=amount, balance_after=after,
                    description=f"{entry_type.lower()} {amount}", metadata={}, **ledger, **extra)  # fmt: skip

    job, rejected, lot = str(uuid.uuid4()), str(uuid.uuid4()), "7"
    add("IDENTITY", idc.UserRegistered(user_id=user, clerk_id="c1", email="a@example.com", first_name="Ada",
                                      last_name=None, avatar=None))  # fmt: skip
    add("LEDGER", entry(lc.CreditsGranted, "BONUS", 10, 10, lot_id="1"))
    add("PAYMENTS", pc.PaymentSucceeded(transaction_id="tx1", user_id=user, credits=50, amount_cents=999,
                                        currency="USD", stripe_payment_intent_id="pi_1",
                                        package_id="basic"))  # fmt: skip
    add("LEDGER", entry(lc.CreditsGranted, "PURCHASE", 50, 60, lot_id="2"))
    add("MEDIA", mc.JobRequested(job_id=job, user_id=user, operation="image_generation", cost=3,
                                 resource_type="image", resource_id="img1", hold_seconds=300))  # fmt: skip
    add("LEDGER", lc.CreditsReserved(user_id=user, reservation_id="r1", amount=3, job_id=job, balance=60,
                                     reserved_after=3, expires_at=T0 + timedelta(hours=1), **ledger))  # fmt: skip
    add("MEDIA", mc.JobCompleted(job_id=job, user_id=user, operation="image_generation", cost=3, resource_id="img1"))
    add("LEDGER", lc.CreditsCaptured(user_id=user, reservation_id="r1", job_id=job, amount=3, released=0,
                                     balance_after=57, reserved_after=0, description="gen", lots={"1": 3},
                                     **ledger))  # fmt: skip
    add("MEDIA", mc.JobRequested(job_id=rejected, user_id=user, operation="video_processing", cost=2,
                                 resource_type="video", resource_id="vid1"))  # fmt: skip
    add("LEDGER", lc.ReservationRejected(user_id=user, reservation_id="r2", job_id=rejected, amount=2, available=1,
                                         balance=1, reason="too few", **ledger))  # fmt: skip
    add("PAYMENTS", pc.PaymentRefunded(transaction_id="tx1", user_id=user, credits_clawed_back=50, refunded_cents=999,
                                       currency="USD", stripe_payment_intent_id="pi_1"))  # fmt: skip
    add("LEDGER", entry(lc.CreditsDebited, "REFUND", 50, 7, lots={"2": 50}))
    add("LEDGER", lc.BalanceLow(user_id=user, available=7, threshold=8, **ledger))
    add("PAYMENTS", pc.SubscriptionRenewed(user_id=user, subscription_id="sub1", invoice_id="in1", credits=100,
                                           amount_cents=1999, currency="USD", period_start=T0,
                                           period_end=T0 + timedelta(days=30)))  # fmt: skip
    add("LEDGER", entry(lc.CreditsGranted, "PURCHASE", 100, 107, expires_at=T0 + timedelta(days=30), lot_id="3"))
    add("LEDGER", lc.CreditsExpiring(user_id=user, lot_id=lot, remaining=100, expires_at=T0 + timedelta(days=30),
                                     **ledger))  # fmt: skip
    add("LEDGER", lc.CreditsExpiring(user_id=user, lot_id="6", remaining=4, expires_at=T0 + timedelta(days=1),
                                     **ledger))  # fmt: skip
    add("LEDGER", entry(lc.CreditsExpired, "EXPIRED", 4, 103, lot_id="6", expires_at=T0 + timedelta(days=1)))
    add("PAYMENTS", pc.SubscriptionCancelled(user_id=user, subscription_id="sub1", plan_id="monthly"))
    add("IDENTITY", idc.UserUpdated(user_id=user, clerk_id="c1", email="ada@example.com", first_name="Ada",
                                   last_name="L", avatar=None))  # fmt: skip
    add("IDENTITY", idc.UserDeactivated(user_id=user))
    return events


@pytest.fixture
async def read_pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    pools: list[AsyncConnectionPool] = []

    async def fresh() -> AsyncConnectionPool:
        pools.append(await make_pool(database_url, f"t_{uuid.uuid4().hex[:12]}", store.MIGRATIONS))
        return pools[-1]

    yield fresh  # type: ignore[misc]
    for pool in pools:
        await pool.close()


async def apply(pool: AsyncConnectionPool, deliveries: list[tuple[str, Envelope, int]]) -> None:
    handlers = {sub.stream: sub.handler for sub in projection.subscriptions(pool, lambda _user: None)}
    for stream, envelope, seq in deliveries:
        await handlers[stream](envelope, seq)


async def tables(pool: AsyncConnectionPool) -> dict[str, list[tuple[Any, ...]]]:
    async with pool.connection() as conn:
        return {name: await (await conn.execute(f"SELECT * FROM {name} ORDER BY {key}")).fetchall()
                for name, key in TABLES.items()}  # fmt: skip


async def test_shuffled_and_duplicated_deliveries_leave_the_same_read_models(read_pool: Any) -> None:
    user = str(uuid.uuid4())
    events = history(user)
    in_order = await read_pool()
    await apply(in_order, events)
    expected = await tables(in_order)
    assert all(expected[name] for name in TABLES), "every read model has rows"
    for seed in range(10):
        shuffled = events * 2
        random.Random(seed).shuffle(shuffled)
        pool = await read_pool()
        await apply(pool, shuffled)
        assert await tables(pool) == expected, f"shuffle {seed}"


async def test_the_dashboards_queries_say_what_happened(read_pool: Any) -> None:
    user = str(uuid.uuid4())
    pool = await read_pool()
    await apply(pool, history(user))
    async with pool.connection() as conn:
        profile = await queries.user_of(conn, user)
        assert profile is not None and (profile["email"], profile["last_name"], profile["is_active"]) == (
            "ada@example.com", "L", False,
        )  # fmt: skip
        assert await queries.balance_of(conn, user) == {"balance": 103, "reserved": 0, "updated_at": T0 + timedelta(
            minutes=17)}  # fmt: skip
        assert await queries.counts_of(conn, user) == {"images": 1, "videos": 0, "transactions": 2}
        assert await queries.totals_of(conn, user) == {"credits_bought": 150, "credits_spent": 3,
                                                       "money_spent_cents": 1999}  # fmt: skip
        [refunded, renewal] = sorted(await queries.transactions_of(conn, user, 10), key=lambda t: t["id"])[::-1]
        assert (refunded["id"], refunded["status"], refunded["amount"], refunded["credits"]) == (
            "tx1", "REFUNDED", 999, 50)  # fmt: skip
        assert refunded["metadata"] == {"package_id": "basic", "refunded_cents": 999, "credits_clawed_back": 50}
        assert (renewal["type"], renewal["status"], renewal["amount"]) == ("SUBSCRIPTION", "COMPLETED", 1999)
        subscription = await queries.subscription_of(conn, user)
        assert subscription is not None
        assert (subscription["status"], subscription["plan_id"], subscription["credits"]) == (
            "CANCELLED",
            "monthly",
            100,
        )
        usage = await queries.usage_by_day(conn, user, 30)
        assert [(u["operation"], u["credits"], u["count"]) for u in usage] == [("image_generation", 3, 1)]
        lots = [(lot["lot_id"], lot["amount"], lot["remaining"]) for lot in await queries.lots_of(conn, user)]
        assert lots == [("3", 100, 100), ("1", 10, 7)]  # spending order: the expiring lot first; lot 2 all taken
        expiring = await queries.expiring_of(conn, user)
        assert [(x["lot_id"], x["remaining"]) for x in expiring] == [("7", 100)]  # lot 6 expired already
        kinds = [a["kind"] for a in await queries.activity_of(conn, user, 50)]
        assert kinds == ["subscription_cancelled", "credits_expired", "credits_expiring", "credits_expiring",
                         "renewal", "balance_low", "refund", "job_completed", "purchase"]  # fmt: skip
        notes = [a["message"] for a in await queries.activity_of(conn, user, 50) if a["notification"]]
        assert notes[-1] == "Your balance is low: 7 credits left"
        assert await queries.balance_at(conn, user, T0 + timedelta(minutes=5)) == 60  # bonus + purchase, then
        assert await queries.balance_at(conn, user, T0 + timedelta(minutes=8)) == 57  # the capture at minute 7
        assert await queries.balance_at(conn, user, T0 - timedelta(minutes=1)) == 0
        jobs = await (await conn.execute("SELECT job_id, status FROM media_jobs ORDER BY requested_at")).fetchall()
        assert [status for _, status in jobs] == ["COMPLETED", "REJECTED"]
