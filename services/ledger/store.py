"""Ledger persistence: the eventsourcing recorder's settings and the relay's tracking table."""

from __future__ import annotations

from datetime import datetime

from psycopg import AsyncConnection, Connection

from services.ledger.application import Ledger
from shared.db import conninfo_parts

SCHEMA = "ledger"

DDL = (
    """CREATE TABLE IF NOT EXISTS relay_position (
        name TEXT PRIMARY KEY,
        position BIGINT NOT NULL
    )""",
    # Where the sweeper looks for holds to expire; derived from the event store, which stays the truth.
    """CREATE TABLE IF NOT EXISTS open_reservations (
        reservation_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS open_reservations_expiry ON open_reservations (expires_at)",
)


def eventsourcing_env(database_url: str) -> dict[str, str]:
    """Environment for the eventsourcing PostgreSQL recorder, in the ledger's own schema.

    POSTGRES_ENABLE_DB_FUNCTIONS stays off: with it on, a follower skipped events under
    concurrent writers (see LIBRARY-NOTES.md).
    """
    parts = conninfo_parts(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts["dbname"],
        "POSTGRES_HOST": parts["host"],
        "POSTGRES_PORT": parts["port"],
        "POSTGRES_USER": parts["user"],
        "POSTGRES_PASSWORD": parts["password"],
        "POSTGRES_SCHEMA": SCHEMA,
        "POSTGRES_POOL_SIZE": "10",
        "POSTGRES_MAX_OVERFLOW": "10",
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        "CREATE_TABLE": "y",
    }


def open_ledger(database_url: str) -> Ledger:
    """The application, its tables created under a lock: eventsourcing's CREATE TABLE IF NOT EXISTS
    is not safe when several ledger instances start at once (one fails on a duplicate type)."""
    with Connection.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('ledger:create-tables'))")
        try:
            return Ledger(env=eventsourcing_env(database_url))
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('ledger:create-tables'))")


async def load_position(conn: AsyncConnection, name: str) -> int:
    cursor = await conn.execute("SELECT position FROM relay_position WHERE name = %s", (name,))
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def save_position(conn: AsyncConnection, name: str, position: int) -> None:
    await conn.execute(
        "INSERT INTO relay_position (name, position) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET position = GREATEST(relay_position.position, EXCLUDED.position)",
        (name, position),
    )


async def hold_opened(conn: AsyncConnection, reservation_id: str, user_id: str, expires_at: datetime) -> None:
    await conn.execute(
        "INSERT INTO open_reservations (reservation_id, user_id, expires_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (reservation_id) DO NOTHING",
        (reservation_id, user_id, expires_at),
    )


async def hold_closed(conn: AsyncConnection, reservation_id: str) -> None:
    await conn.execute("DELETE FROM open_reservations WHERE reservation_id = %s", (reservation_id,))


async def expired_holds(conn: AsyncConnection, now: datetime, limit: int) -> list[tuple[str, str]]:
    cursor = await conn.execute(
        "SELECT user_id, reservation_id FROM open_reservations WHERE expires_at <= %s ORDER BY expires_at LIMIT %s",
        (now, limit),
    )
    return [(str(u), str(r)) for u, r in await cursor.fetchall()]
