"""Projections' read tables and queries."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

DDL = (
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
    """CREATE TABLE IF NOT EXISTS balances (
        user_id UUID PRIMARY KEY,
        balance BIGINT NOT NULL CHECK (balance >= 0),
        reserved BIGINT NOT NULL DEFAULT 0,
        last_seq BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
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
    """CREATE TABLE IF NOT EXISTS positions (
        consumer TEXT PRIMARY KEY,
        stream TEXT NOT NULL,
        stream_seq BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
)


async def record_position(conn: AsyncConnection, consumer: str, stream: str, seq: int) -> None:
    await conn.execute(
        "INSERT INTO positions (consumer, stream, stream_seq) VALUES (%s, %s, %s)"
        " ON CONFLICT (consumer) DO UPDATE SET stream_seq = GREATEST(positions.stream_seq, EXCLUDED.stream_seq),"
        " updated_at = now()",
        (consumer, stream, seq),
    )


async def upsert_user(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO users (user_id, clerk_id, email, first_name, last_name, avatar, registered_at)"
        " VALUES (%(user_id)s, %(clerk_id)s, %(email)s, %(first_name)s, %(last_name)s, %(avatar)s, %(at)s)"
        " ON CONFLICT (user_id) DO UPDATE SET clerk_id = EXCLUDED.clerk_id, email = EXCLUDED.email,"
        " first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, avatar = EXCLUDED.avatar",
        row,
    )


async def set_user_active(conn: AsyncConnection, user_id: str, active: bool) -> None:
    await conn.execute("UPDATE users SET is_active = %s WHERE user_id = %s", (active, user_id))


async def set_balance(
    conn: AsyncConnection,
    user_id: str,
    *,
    seq: int,
    at: Any,
    balance: int | None = None,
    reserved: int | None = None,
) -> None:
    """Move the account's row to the state after stream message `seq`, never back to an older one."""
    await conn.execute(
        "INSERT INTO balances AS b (user_id, balance, reserved, last_seq, updated_at)"
        " VALUES (%(user_id)s, COALESCE(%(balance)s, 0), COALESCE(%(reserved)s, 0), %(seq)s, %(at)s)"
        " ON CONFLICT (user_id) DO UPDATE SET"
        " balance = COALESCE(%(balance)s, b.balance), reserved = COALESCE(%(reserved)s, b.reserved),"
        " last_seq = EXCLUDED.last_seq, updated_at = EXCLUDED.updated_at"
        " WHERE b.last_seq < EXCLUDED.last_seq",
        {"user_id": user_id, "balance": balance, "reserved": reserved, "seq": seq, "at": at},
    )


async def add_entry(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO credit_entries (seq, event_id, user_id, entry_type, amount, balance_after, description,"
        " metadata, occurred_at) VALUES (%(seq)s, %(event_id)s, %(user_id)s, %(entry_type)s, %(amount)s,"
        " %(balance_after)s, %(description)s, %(metadata)s, %(occurred_at)s) ON CONFLICT DO NOTHING",
        {**row, "metadata": Jsonb(row["metadata"])},
    )


async def balance_of(conn: AsyncConnection, user_id: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT balance, reserved, updated_at FROM balances WHERE user_id = %s", (user_id,))
        return await cur.fetchone()


async def entries_of(conn: AsyncConnection, user_id: str, *, before: int | None, limit: int) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT seq, event_id::text AS id, entry_type AS type, amount, balance_after, description, metadata,"
            " occurred_at AS created_at FROM credit_entries WHERE user_id = %s AND seq < %s"
            " ORDER BY seq DESC LIMIT %s",
            (user_id, before if before is not None else 2**62, limit),
        )
        return await cur.fetchall()
