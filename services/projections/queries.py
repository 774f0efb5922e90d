"""What the API reads from the read models: a user's figures, history, related records and live feed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from services.projections.store import fetch_all, fetch_one
from shared import finance


async def user_of(conn: AsyncConnection, user_id: str) -> dict[str, Any] | None:
    return await fetch_one(
        conn,
        "SELECT user_id::text AS id, clerk_id, email, first_name, last_name, avatar, is_active, registered_at"
        " FROM users WHERE user_id = %s AND profile_seq > 0",
        (user_id,),
    )


async def balance_of(conn: AsyncConnection, user_id: str) -> dict[str, Any] | None:
    return await fetch_one(conn, "SELECT balance, reserved, updated_at FROM balances WHERE user_id = %s", (user_id,))


async def balance_at(conn: AsyncConnection, user_id: str, at: Any) -> int:
    row = await fetch_one(
        conn,
        "SELECT balance_after FROM credit_entries WHERE user_id = %s AND occurred_at <= %s ORDER BY seq DESC LIMIT 1",
        (user_id, at),
    )
    return int(row["balance_after"]) if row else 0


async def entries_of(
    conn: AsyncConnection, user_id: str, *, before: int | None, limit: int, entry_type: str | None = None,
    at: Any = None, member_id: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """An account's credit log, newest first, below stream position `before`; only of `entry_type`, only up
    to the moment `at`, and only what an organization's member spent (`member_id`), when given."""
    return await fetch_all(
        conn,
        "SELECT seq, event_id::text AS id, entry_type AS type, amount, balance_after, description, metadata,"
        " occurred_at AS created_at, member_id::text AS member_id FROM credit_entries"
        " WHERE user_id = %(u)s AND seq < %(before)s AND (%(type)s::text IS NULL OR entry_type = %(type)s)"
        " AND (%(member)s::uuid IS NULL OR member_id = %(member)s)"
        " AND (%(at)s::timestamptz IS NULL OR occurred_at <= %(at)s) ORDER BY seq DESC LIMIT %(limit)s",
        {"u": user_id, "before": before if before is not None else 2**62, "type": entry_type, "at": at,
         "limit": limit, "member": member_id},
    )  # fmt: skip


async def organization_of(conn: AsyncConnection, org_id: str) -> dict[str, Any] | None:
    return await fetch_one(
        conn, "SELECT org_id, account_id::text AS account_id, name, slug FROM organizations"
        " WHERE org_id = %s AND NOT deleted", (org_id,),
    )  # fmt: skip


async def members_usage(conn: AsyncConnection, org_id: str, account_id: str, since: Any) -> list[dict[str, Any]]:
    """Each member (and anyone who spent the account, a member no longer), what they spent of it since `since`
    (the month's start) and their monthly limit; first the ones who spent most."""
    return await fetch_all(
        conn,
        "WITH spent AS (SELECT member_id, -SUM(amount) AS used FROM credit_entries WHERE user_id = %(a)s"
        "   AND member_id IS NOT NULL AND entry_type = 'USAGE' AND occurred_at >= %(since)s GROUP BY member_id),"
        " people AS (SELECT user_id AS member_id FROM org_members WHERE org_id = %(o)s AND active"
        "   UNION SELECT member_id FROM spent)"
        " SELECT p.member_id::text AS user_id, NULLIF(u.clerk_id, '') AS clerk_id, m.role,"
        " COALESCE(m.active, FALSE) AS active,"
        " NULLIF(concat_ws(' ', u.first_name, u.last_name), '') AS name, NULLIF(u.email, '') AS email,"
        " l.monthly_credits AS monthly_limit, COALESCE(s.used, 0) AS used FROM people p"
        " LEFT JOIN org_members m ON m.org_id = %(o)s AND m.user_id = p.member_id"
        " LEFT JOIN users u ON u.user_id = p.member_id"
        " LEFT JOIN member_limits l ON l.account_id = %(a)s AND l.member_id = p.member_id"
        " LEFT JOIN spent s ON s.member_id = p.member_id ORDER BY used DESC, user_id",
        {"a": account_id, "o": org_id, "since": since},
    )


async def totals_of(conn: AsyncConnection, user_id: str) -> dict[str, int]:
    """Credits bought (purchases and renewals) and spent (usage less nothing: a refund is a claw-back), and
    money paid less money refunded."""
    row = await fetch_one(
        conn,
        "SELECT COALESCE(SUM(amount) FILTER (WHERE entry_type = 'PURCHASE'), 0) AS credits_bought,"
        " COALESCE(-SUM(amount) FILTER (WHERE entry_type = 'USAGE'), 0) AS credits_spent"
        " FROM credit_entries WHERE user_id = %(u)s",
        {"u": user_id},
    )
    money = await fetch_one(
        conn,
        "SELECT COALESCE(SUM(amount_cents) FILTER (WHERE status IN ('COMPLETED', 'REFUNDED')), 0)"
        " - COALESCE(SUM((metadata->>'refunded_cents')::bigint) FILTER (WHERE status = 'REFUNDED'), 0) AS paid"
        " FROM transactions WHERE user_id = %(u)s",
        {"u": user_id},
    )
    assert row is not None and money is not None
    return {"credits_bought": int(row["credits_bought"]), "credits_spent": int(row["credits_spent"]),
            "money_spent_cents": int(money["paid"])}  # fmt: skip


async def counts_of(conn: AsyncConnection, user_id: str) -> dict[str, int]:
    row = await fetch_one(
        conn,
        "SELECT (SELECT count(*) FROM media_jobs WHERE user_id = %(u)s AND status = 'COMPLETED'"
        "        AND resource_type = 'image') AS images,"
        " (SELECT count(*) FROM media_jobs WHERE user_id = %(u)s AND status = 'COMPLETED'"
        "        AND resource_type = 'video') AS videos,"
        " (SELECT count(*) FROM transactions WHERE user_id = %(u)s) AS transactions",
        {"u": user_id},
    )
    assert row is not None
    return {key: int(value) for key, value in row.items()}


async def lots_of(conn: AsyncConnection, user_id: str) -> list[dict[str, Any]]:
    """The lots with credit left, in the order the ledger spends them: soonest expiry first, lasting ones last."""
    return await fetch_all(
        conn,
        "SELECT l.lot_id, l.amount, l.amount - l.taken AS remaining, l.expires_at, l.description,"
        " COALESCE(f.value_cents, 0) AS value_cents, f.currency FROM lots l"
        " LEFT JOIN finance_lots f ON f.user_id = l.user_id AND f.lot_id = l.lot_id"
        " WHERE l.user_id = %s AND l.amount IS NOT NULL AND NOT l.expired AND l.amount > l.taken"
        " ORDER BY l.expires_at IS NULL, l.expires_at, length(l.lot_id), l.lot_id",
        (user_id,),
    )


async def expiring_of(conn: AsyncConnection, user_id: str) -> list[dict[str, Any]]:
    """The ledger's warnings of lots that expire soon, for lots that have not expired yet."""
    return await fetch_all(
        conn,
        "SELECT DISTINCT ON (data->>'lot_id') data->>'lot_id' AS lot_id, (data->>'remaining')::bigint AS remaining,"
        " (data->>'expires_at')::timestamptz AS expires_at FROM activity a WHERE user_id = %(u)s"
        " AND kind = 'credits_expiring' AND (data->>'expires_at')::timestamptz > now() AND NOT EXISTS ("
        "   SELECT 1 FROM activity x WHERE x.user_id = %(u)s AND x.kind = 'credits_expired'"
        "   AND x.data->>'lot_id' = a.data->>'lot_id')"
        " ORDER BY data->>'lot_id', occurred_at DESC",
        {"u": user_id},
    )


async def spending_of(conn: AsyncConnection, account_id: str, since: Any) -> dict[str, Any]:
    """What the account spent since `since` (the month's start) and its monthly cap."""
    row = await fetch_one(
        conn,
        "SELECT (SELECT monthly_credits FROM usage_caps WHERE account_id = %(a)s) AS monthly_cap,"
        " (SELECT COALESCE(-SUM(amount), 0) FROM credit_entries WHERE user_id = %(a)s AND entry_type = 'USAGE'"
        "  AND occurred_at >= %(since)s) AS used_this_month",
        {"a": account_id, "since": since},
    )
    assert row is not None
    return {"monthly_cap": row["monthly_cap"], "used_this_month": int(row["used_this_month"])}


async def usage_by_day(conn: AsyncConnection, user_id: str, days: int) -> list[dict[str, Any]]:
    """Credits used per operation per UTC day over the last `days` days; spending that was not a media job
    (a direct debit) is `other`."""
    return await fetch_all(
        conn,
        "SELECT (e.occurred_at AT TIME ZONE 'UTC')::date AS day, COALESCE(j.operation, 'other') AS operation,"
        " -SUM(e.amount)::bigint AS credits, count(*) AS count FROM credit_entries e"
        " LEFT JOIN media_jobs j ON j.job_id = e.metadata->>'job_id'"
        " WHERE e.user_id = %s AND e.entry_type = 'USAGE' AND e.occurred_at >= now() - make_interval(days => %s)"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        (user_id, days),
    )


async def activity_of(conn: AsyncConnection, user_id: str, limit: int | None) -> list[dict[str, Any]]:
    """Newest first; `limit` None: all of it."""
    return await fetch_all(
        conn,
        "SELECT kind, notification, message, data, occurred_at FROM activity WHERE user_id = %s"
        " ORDER BY occurred_at DESC, event_id LIMIT %s",
        (user_id, limit),
    )


async def transactions_of(conn: AsyncConnection, user_id: str, limit: int | None) -> list[dict[str, Any]]:
    """Newest first; `limit` None: all of them."""
    return await fetch_all(
        conn,
        "SELECT id, type, status, amount_cents AS amount, currency, credits, description, stripe_payment_intent_id,"
        " metadata, created_at, updated_at FROM transactions WHERE user_id = %s ORDER BY created_at DESC, id LIMIT %s",
        (user_id, limit),
    )


async def subscription_of(conn: AsyncConnection, user_id: str) -> dict[str, Any] | None:
    return await fetch_one(
        conn,
        "SELECT id, plan_id, status, credits, amount_cents, current_period_end, updated_at FROM subscriptions"
        " WHERE user_id = %s ORDER BY (status = 'CANCELLED'), updated_at DESC LIMIT 1",
        (user_id,),
    )


async def feed_head(conn: AsyncConnection, user_id: str) -> int:
    row = await fetch_one(conn, "SELECT n FROM feed_heads WHERE user_id = %s", (user_id,))
    return int(row["n"]) if row else 0


async def feed_after(conn: AsyncConnection, user_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    return await fetch_all(
        conn,
        "SELECT n, kind, data FROM feed WHERE user_id = %s AND n > %s ORDER BY n LIMIT %s",
        (user_id, after, limit),
    )


# -- a user's export: everything, not a page --------------------------------------------------------


async def all_subscriptions_of(conn: AsyncConnection, user_id: str) -> list[dict[str, Any]]:
    return await fetch_all(
        conn,
        "SELECT id, plan_id, status, credits, amount_cents, current_period_end, updated_at FROM subscriptions"
        " WHERE user_id = %s ORDER BY updated_at DESC, id",
        (user_id,),
    )


async def all_lots_of(conn: AsyncConnection, user_id: str) -> list[dict[str, Any]]:
    return await fetch_all(
        conn,
        "SELECT lot_id, amount, amount - taken AS remaining, expired, expires_at, description, granted_at FROM lots"
        " WHERE user_id = %s ORDER BY granted_at NULLS LAST, length(lot_id), lot_id",
        (user_id,),
    )


JOBS = "SELECT job_id, operation, status, cost, resource_type, resource_id, requested_at, ended_at FROM media_jobs"


async def all_jobs_of(conn: AsyncConnection, user_id: str) -> list[dict[str, Any]]:
    return await fetch_all(conn, f"{JOBS} WHERE user_id = %s ORDER BY requested_at NULLS LAST, job_id", (user_id,))


async def recent_jobs_of(conn: AsyncConnection, user_id: str, limit: int) -> list[dict[str, Any]]:
    return await fetch_all(
        conn, f"{JOBS} WHERE user_id = %s ORDER BY requested_at DESC NULLS LAST, job_id DESC LIMIT %s", (user_id, limit)
    )


async def all_entries_of(conn: AsyncConnection, user_id: str, batch: int = 1_000) -> AsyncIterator[dict[str, Any]]:
    """The whole credit log, newest first, through a server-side cursor (inside the caller's transaction),
    so a long history is never held at once."""
    async with conn.cursor("export_entries", row_factory=dict_row) as cur:
        cur.itersize = batch
        await cur.execute(
            "SELECT event_id::text AS id, entry_type AS type, amount, balance_after, description, metadata,"
            " occurred_at AS created_at, member_id::text AS member_id FROM credit_entries WHERE user_id = %s"
            " ORDER BY seq DESC",
            (user_id,),
        )
        async for row in cur:
            yield row


# -- finance: what the credits are worth (shared/finance.py) ----------------------------------------------------


async def finance_totals(
    conn: AsyncConnection, through: str, account_id: str | None = None
) -> dict[tuple[str, str, finance.Kind], int]:
    """Cents moved by (month, currency, kind) up to the month `through` (YYYY-MM), of one account or all."""
    rows = await fetch_all(
        conn,
        "SELECT month, currency, kind, SUM(cents) AS cents FROM finance_entries WHERE month <= %(through)s"
        " AND (%(account)s::uuid IS NULL OR user_id = %(account)s::uuid) GROUP BY month, currency, kind",
        {"through": through, "account": account_id},
    )
    return {(r["month"], r["currency"], finance.Kind(r["kind"])): int(r["cents"]) for r in rows}


async def recognised_by_operation(
    conn: AsyncConnection, month: str, account_id: str | None = None
) -> list[dict[str, Any]]:
    """The month's recognised revenue by what it paid for: a job's operation (from its media job), else what
    the debit said."""
    return await fetch_all(
        conn,
        "SELECT f.currency, COALESCE(f.operation, j.operation, 'unknown') AS operation, SUM(f.credits) AS credits,"
        " SUM(f.cents) AS recognised FROM finance_entries f LEFT JOIN media_jobs j ON j.job_id = f.job_id"
        " WHERE f.month = %(month)s AND f.kind = 'recognised'"
        " AND (%(account)s::uuid IS NULL OR f.user_id = %(account)s::uuid) GROUP BY 1, 2 ORDER BY 1, 4 DESC, 2",
        {"month": month, "account": account_id},
    )
