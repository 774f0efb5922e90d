"""PostgreSQL access: one schema per service inside the configured database."""

from __future__ import annotations

import psycopg
import psycopg_pool
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

# PostgreSQL restarting or out of reach (a lost connection, or none to be had from the pool).
UNAVAILABLE: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


def schema_conninfo(database_url: str, schema: str) -> str:
    """Connection string whose sessions see only `schema` (and public for extensions)."""
    return make_conninfo(database_url, options=f"-c search_path={schema},public")


def conninfo_parts(database_url: str) -> dict[str, str]:
    parts = {k: str(v) for k, v in conninfo_to_dict(database_url).items()}
    parts.setdefault("host", "localhost")
    parts.setdefault("port", "5432")
    parts.setdefault("user", "postgres")
    parts.setdefault("password", "")
    parts.setdefault("dbname", parts["user"])
    return parts


async def try_lock(conn: AsyncConnection, name: str) -> bool:
    """Take the transaction-scoped advisory lock `name` of the connection's schema, if it is free.

    Advisory locks are database-wide; keying them by schema keeps a service in one schema from
    holding up its namesake in another (two deployments, or tests beside a running system).
    """
    cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || ':' || %s))", (name,))
    row = await cursor.fetchone()
    return bool(row and row[0])


async def open_pool(database_url: str, schema: str, max_size: int = 10) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(schema_conninfo(database_url, schema), min_size=1, max_size=max_size, open=False)
    await pool.open(wait=True, timeout=15)
    return pool
