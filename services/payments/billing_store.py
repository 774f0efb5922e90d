"""The queries of payments' billing tables (store.py makes them): each user's Stripe customer, subscriptions,
auto-recharge settings and the low-balance crossings acted on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from services.payments.domain import AutoRecharge, RechargesThisMonth, Subscription, SubscriptionStatus
from services.payments.store import CROSSINGS, locked, one
from shared.inbox import first_delivery

_SUBSCRIPTION = (
    "id::text AS id, user_id::text AS user_id, plan_id, status, stripe_subscription_id, current_period_start,"
    " current_period_end, cancel_at_period_end, created_at, updated_at"
)
_AUTO_RECHARGE = (
    "user_id::text AS user_id, enabled, threshold, package_id, monthly_cap_cents, disabled_reason, updated_at,"
    " monthly_max_recharges"
)


def _subscription(row: dict[str, Any]) -> Subscription:
    return Subscription(**{**row, "status": SubscriptionStatus(row["status"])})


# -- customers and subscriptions ------------------------------------------------------------------


async def customer_of(conn: AsyncConnection, user_id: str) -> str | None:
    cursor = await conn.execute("SELECT stripe_customer_id FROM customers WHERE user_id = %s", (user_id,))
    row = await cursor.fetchone()
    return str(row[0]) if row else None


async def lock_customer(conn: AsyncConnection, user_id: str) -> None:
    """Serialise making a user's Stripe customer (two first cards at once make one customer)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('customer:' || %s))", (user_id,))


async def add_customer(conn: AsyncConnection, user_id: str, customer: str) -> None:
    await conn.execute("INSERT INTO customers (user_id, stripe_customer_id) VALUES (%s, %s)", (user_id, customer))


async def insert_subscription(conn: AsyncConnection, sub: Subscription) -> bool:
    """False when the user already has a live subscription."""
    cursor = await conn.execute(
        "INSERT INTO subscriptions (id, user_id, plan_id, status, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (sub.id, sub.user_id, sub.plan_id, sub.status, sub.created_at, sub.updated_at),
    )
    return cursor.rowcount == 1


async def subscription(conn: AsyncConnection, sub_id: str, *, lock: bool = False) -> Subscription | None:
    query = f"SELECT {_SUBSCRIPTION} FROM subscriptions WHERE id = %s{locked(lock)}"
    return await one(conn, query, (sub_id,), _subscription)


async def subscription_by_stripe_id(conn: AsyncConnection, stripe_id: str) -> Subscription | None:
    query = f"SELECT {_SUBSCRIPTION} FROM subscriptions WHERE stripe_subscription_id = %s FOR UPDATE"
    return await one(conn, query, (stripe_id,), _subscription)


async def current_subscription(conn: AsyncConnection, user_id: str) -> Subscription | None:
    """The user's live subscription, else their latest one."""
    query = (
        f"SELECT {_SUBSCRIPTION} FROM subscriptions WHERE user_id = %s"
        " ORDER BY status IN ('INCOMPLETE', 'ACTIVE', 'PAST_DUE') DESC, created_at DESC LIMIT 1"
    )
    return await one(conn, query, (user_id,), _subscription)


async def save_subscription(conn: AsyncConnection, sub: Subscription) -> None:
    await conn.execute(
        "UPDATE subscriptions SET status = %s, stripe_subscription_id = %s, current_period_start = %s,"
        " current_period_end = %s, cancel_at_period_end = %s, updated_at = %s WHERE id = %s",
        (
            sub.status, sub.stripe_subscription_id, sub.current_period_start, sub.current_period_end,
            sub.cancel_at_period_end, sub.updated_at, sub.id,
        ),
    )  # fmt: skip


# -- auto-recharge --------------------------------------------------------------------------------


async def auto_recharge(conn: AsyncConnection, user_id: str, *, lock: bool = False) -> AutoRecharge | None:
    query = f"SELECT {_AUTO_RECHARGE} FROM auto_recharge WHERE user_id = %s{locked(lock)}"
    return await one(conn, query, (user_id,), lambda row: AutoRecharge(**row))


async def save_auto_recharge(conn: AsyncConnection, setting: AutoRecharge) -> None:
    await conn.execute(
        "INSERT INTO auto_recharge (user_id, enabled, threshold, package_id, monthly_cap_cents, disabled_reason,"
        " updated_at, monthly_max_recharges) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (user_id) DO UPDATE"
        " SET enabled = EXCLUDED.enabled, threshold = EXCLUDED.threshold, package_id = EXCLUDED.package_id,"
        " monthly_cap_cents = EXCLUDED.monthly_cap_cents, disabled_reason = EXCLUDED.disabled_reason,"
        " updated_at = EXCLUDED.updated_at, monthly_max_recharges = EXCLUDED.monthly_max_recharges",
        (
            setting.user_id, setting.enabled, setting.threshold, setting.package_id, setting.monthly_cap_cents,
            setting.disabled_reason, setting.updated_at, setting.monthly_max_recharges,
        ),
    )  # fmt: skip


async def claim_crossing(conn: AsyncConnection, event_id: str, user_id: str) -> bool:
    """Claim a crossing for the caller's transaction; False when it was acted on before (the inbox knows it)."""
    if not await first_delivery(conn, CROSSINGS, event_id):
        return False
    await conn.execute(
        "INSERT INTO recharges (crossing_event_id, user_id, outcome) VALUES (%s, %s, 'pending')", (event_id, user_id)
    )
    return True


async def settle_crossing(
    conn: AsyncConnection, event_id: str, outcome: str, tx_id: str | None = None, amount_cents: int = 0
) -> None:
    await conn.execute(
        "UPDATE recharges SET outcome = %s, transaction_id = %s, amount_cents = %s WHERE crossing_event_id = %s",
        (outcome, tx_id, amount_cents, event_id),
    )


async def recharged(conn: AsyncConnection, user_id: str, month_start: datetime) -> RechargesThisMonth:
    """Cents and purchases bought automatically since `month_start`, and when the last one was made."""
    cursor = await conn.execute(
        "SELECT coalesce(sum(amount_cents) FILTER (WHERE created_at >= %s), 0),"
        " count(*) FILTER (WHERE created_at >= %s), max(created_at)"
        " FROM recharges WHERE user_id = %s AND transaction_id IS NOT NULL",
        (month_start, month_start, user_id),
    )
    row = await cursor.fetchone()
    return RechargesThisMonth(int(row[0]), int(row[1]), row[2]) if row else RechargesThisMonth(0, 0, None)
