"""Identity's tables and queries."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import class_row

from services.identity.domain import Profile, User

DDL = (
    """CREATE TABLE IF NOT EXISTS users (
        id UUID PRIMARY KEY,
        clerk_id TEXT NOT NULL UNIQUE,
        email TEXT NOT NULL,
        first_name TEXT,
        last_name TEXT,
        avatar TEXT,
        is_active BOOLEAN NOT NULL DEFAULT TRUE,
        role TEXT NOT NULL DEFAULT 'user',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
)

_COLUMNS = "id::text AS id, clerk_id, email, first_name, last_name, avatar, is_active, role, created_at, updated_at"


async def insert_if_absent(conn: AsyncConnection, user_id: str, profile: Profile) -> User | None:
    """Insert the user unless the clerk id exists; None when it did (another sign-in won)."""
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute(
            "INSERT INTO users (id, clerk_id, email, first_name, last_name, avatar)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (clerk_id) DO NOTHING"
            f" RETURNING {_COLUMNS}",
            (user_id, profile.clerk_id, profile.email, profile.first_name, profile.last_name, profile.avatar),
        )
        return await cur.fetchone()


async def by_clerk_id(conn: AsyncConnection, clerk_id: str) -> User | None:
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM users WHERE clerk_id = %s", (clerk_id,))
        return await cur.fetchone()
