"""Ledger persistence: the eventsourcing recorder's settings and the relay's tracking table."""

from __future__ import annotations

from psycopg import AsyncConnection

from shared.db import conninfo_parts

SCHEMA = "ledger"

DDL = (
    """CREATE TABLE IF NOT EXISTS relay_position (
        name TEXT PRIMARY KEY,
        position BIGINT NOT NULL
    )""",
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
