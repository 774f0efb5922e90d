"""Projections' tables, and what the read models are kept with: each consumer's stream position, the apply lock a
replay's swap takes, and the live stream's tickets. Reading helpers for the queries beside it."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from shared.migrations import Migration

V1 = (  # migration 1: the tables as the service made them at every start before migrations
    """CREATE TABLE IF NOT EXISTS users (
        user_id UUID PRIMARY KEY,
        clerk_id TEXT NOT NULL,
        email TEXT NOT NULL,
        first_name TEXT,
        last_name TEXT,
        avatar TEXT,
        is_active BOOLEAN NOT NULL DEFAULT TRUE,
        registered_at TIMESTAMPTZ NOT NULL
    )""",
    # The stream positions of the newest profile and status applied: an older event, redelivered late or
    # overtaken, changes nothing.
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS profile_seq BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS status_seq BIGINT NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS balances (
        user_id UUID PRIMARY KEY,
        balance BIGINT NOT NULL CHECK (balance >= 0),
        reserved BIGINT NOT NULL DEFAULT 0,
        last_seq BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    # Each figure with the stream position it is from: events carry one or the other (a grant its balance, a
    # hold its reserved credit), so an event applied out of order never puts an older figure back.
    "ALTER TABLE balances ADD COLUMN IF NOT EXISTS balance_seq BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE balances ADD COLUMN IF NOT EXISTS reserved_seq BIGINT NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS credit_entries (
        seq BIGINT PRIMARY KEY,
        event_id UUID NOT NULL UNIQUE,
        user_id UUID NOT NULL,
        entry_type TEXT NOT NULL,
        amount BIGINT NOT NULL,
        balance_after BIGINT NOT NULL,
        description TEXT NOT NULL,
        metadata JSONB NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS credit_entries_by_user ON credit_entries (user_id, seq DESC)",
    # Payments' transactions as the PAYMENTS stream tells them; `rank` only rises (a stale event never
    # turns a COMPLETED purchase back into FAILED), as in payments' own domain.
    """CREATE TABLE IF NOT EXISTS transactions (
        id TEXT PRIMARY KEY,
        user_id UUID NOT NULL,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        rank INTEGER NOT NULL,
        amount_cents BIGINT NOT NULL,
        currency TEXT NOT NULL,
        credits BIGINT NOT NULL,
        description TEXT NOT NULL,
        stripe_payment_intent_id TEXT,
        metadata JSONB NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS transactions_by_user ON transactions (user_id, created_at DESC)",
    """CREATE TABLE IF NOT EXISTS subscriptions (
        id TEXT PRIMARY KEY,
        user_id UUID NOT NULL,
        plan_id TEXT,
        status TEXT NOT NULL,
        credits BIGINT,
        amount_cents BIGINT,
        current_period_end TIMESTAMPTZ,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS subscriptions_by_user ON subscriptions (user_id, updated_at DESC)",
    # Media's jobs from the MEDIA stream (and the ledger's refusals): what was made, by which operation.
    """CREATE TABLE IF NOT EXISTS media_jobs (
        job_id TEXT PRIMARY KEY,
        user_id UUID NOT NULL,
        operation TEXT NOT NULL,
        resource_type TEXT,
        resource_id TEXT,
        cost BIGINT,
        status TEXT NOT NULL,
        requested_at TIMESTAMPTZ,
        ended_at TIMESTAMPTZ
    )""",
    "CREATE INDEX IF NOT EXISTS media_jobs_by_user ON media_jobs (user_id, status, resource_type)",
    # What happened to a user, newest first: purchases, refunds, renewals, media outcomes, notifications.
    """CREATE TABLE IF NOT EXISTS activity (
        event_id UUID PRIMARY KEY,
        user_id UUID NOT NULL,
        kind TEXT NOT NULL,
        notification BOOLEAN NOT NULL,
        message TEXT NOT NULL,
        data JSONB NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS activity_by_user ON activity (user_id, occurred_at DESC, event_id)",
    "CREATE INDEX IF NOT EXISTS credit_entries_by_user_time ON credit_entries (user_id, occurred_at, seq)",
    # Each account's lots: what each grant added, what entries took from it (added up, so any order of
    # delivery gives the same), and whether its rest expired.
    """CREATE TABLE IF NOT EXISTS lots (
        user_id UUID NOT NULL,
        lot_id TEXT NOT NULL,
        amount BIGINT,
        taken BIGINT NOT NULL DEFAULT 0,
        expired BOOLEAN NOT NULL DEFAULT FALSE,
        expires_at TIMESTAMPTZ,
        description TEXT,
        granted_at TIMESTAMPTZ,
        PRIMARY KEY (user_id, lot_id)
    )""",
    # Each user's live feed (balance changes and notifications), numbered per user in commit order: the
    # head row's lock makes a second transaction for the same user wait for the first one's number.
    """CREATE TABLE IF NOT EXISTS feed (
        user_id UUID NOT NULL,
        n BIGINT NOT NULL,
        kind TEXT NOT NULL,
        data JSONB NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (user_id, n)
    )""",
    "CREATE TABLE IF NOT EXISTS feed_heads (user_id UUID PRIMARY KEY, n BIGINT NOT NULL)",
    # Single-use tickets for a browser's EventSource (it cannot send an Authorization header); only the
    # ticket's hash is kept.
    """CREATE TABLE IF NOT EXISTS stream_tickets (
        ticket_hash TEXT PRIMARY KEY,
        user_id UUID NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS positions (
        consumer TEXT PRIMARY KEY,
        stream TEXT NOT NULL,
        stream_seq BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
)
MIGRATIONS = (
    Migration(1, "initial tables", V1),
    # Organizations' shared accounts: who spent each entry, the members and their monthly limits.
    Migration(2, "organizations", (
        "ALTER TABLE credit_entries ADD COLUMN member_id UUID",
        "CREATE INDEX credit_entries_by_member ON credit_entries (user_id, member_id, occurred_at)"
        " WHERE member_id IS NOT NULL",
        """CREATE TABLE organizations (
            org_id TEXT PRIMARY KEY,
            account_id UUID NOT NULL,
            name TEXT NOT NULL,
            slug TEXT,
            deleted BOOLEAN NOT NULL DEFAULT FALSE,
            seq BIGINT NOT NULL
        )""",
        """CREATE TABLE org_members (
            org_id TEXT NOT NULL,
            user_id UUID NOT NULL,
            role TEXT,
            active BOOLEAN NOT NULL,
            seq BIGINT NOT NULL,
            PRIMARY KEY (org_id, user_id)
        )""",
        """CREATE TABLE member_limits (
            account_id UUID NOT NULL,
            member_id UUID NOT NULL,
            monthly_credits BIGINT,
            seq BIGINT NOT NULL,
            PRIMARY KEY (account_id, member_id)
        )""",
    )),
    # Each account's monthly spending cap, as its owner last set it.
    Migration(3, "usage caps", (
        """CREATE TABLE usage_caps (
            account_id UUID PRIMARY KEY,
            monthly_credits BIGINT,
            seq BIGINT NOT NULL
        )""",
    )),
    # What the credits are worth (shared/finance.py): each paid lot's value and how much of it has left, and
    # every movement of value (sold, recognised, breakage, refunded) by the month it happened in.
    Migration(4, "finance", (
        """CREATE TABLE finance_lots (
            user_id UUID NOT NULL,
            lot_id TEXT NOT NULL,
            credits BIGINT NOT NULL,
            value_cents BIGINT NOT NULL,
            currency TEXT NOT NULL,
            taken BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (user_id, lot_id)
        )""",
        """CREATE TABLE finance_entries (
            event_id UUID NOT NULL,
            lot_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            user_id UUID NOT NULL,
            kind TEXT NOT NULL,
            month TEXT NOT NULL,
            currency TEXT NOT NULL,
            credits BIGINT NOT NULL,
            cents BIGINT NOT NULL,
            job_id TEXT,
            operation TEXT,
            PRIMARY KEY (event_id, lot_id)
        )""",
        "CREATE INDEX finance_entries_by_month ON finance_entries (month, currency, kind)",
        "CREATE INDEX finance_entries_by_user ON finance_entries (user_id, month)",
    )),
)  # fmt: skip


async def record_position(conn: AsyncConnection, consumer: str, stream: str, seq: int) -> None:
    await conn.execute(
        "INSERT INTO positions (consumer, stream, stream_seq) VALUES (%s, %s, %s)"
        " ON CONFLICT (consumer) DO UPDATE SET stream_seq = GREATEST(positions.stream_seq, EXCLUDED.stream_seq),"
        " updated_at = now()",
        (consumer, stream, seq),
    )


async def positions(conn: AsyncConnection) -> list[dict[str, Any]]:
    return await fetch_all(conn, "SELECT consumer, stream, stream_seq, updated_at FROM positions ORDER BY consumer", ())


async def lock_apply(conn: AsyncConnection, *, exclusive: bool) -> None:
    """For the rest of the transaction: shared by every batch the consumers apply, exclusive for a replay's
    swap, which so finds no batch half-way and lets none start until it is done."""
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    await conn.execute(f"SELECT {function}(hashtext(current_schema() || ':apply'))")


async def issue_ticket(conn: AsyncConnection, ticket_hash: str, user_id: str, expires_at: Any) -> None:
    await conn.execute("DELETE FROM stream_tickets WHERE expires_at < now()")
    await conn.execute(
        "INSERT INTO stream_tickets (ticket_hash, user_id, expires_at) VALUES (%s, %s, %s)",
        (ticket_hash, user_id, expires_at),
    )


async def redeem_ticket(conn: AsyncConnection, ticket_hash: str) -> str | None:
    """The ticket's user, once: a ticket is gone when used, and worth nothing once expired."""
    row = await fetch_one(
        conn,
        "DELETE FROM stream_tickets WHERE ticket_hash = %s"
        " RETURNING user_id::text AS user_id, expires_at > now() AS ok",
        (ticket_hash,),
    )
    return str(row["user_id"]) if row and row["ok"] else None


async def fetch_all(conn: AsyncConnection, sql: str, params: Any) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


async def fetch_one(conn: AsyncConnection, sql: str, params: Any) -> dict[str, Any] | None:
    rows = await fetch_all(conn, sql, params)
    return rows[0] if rows else None
