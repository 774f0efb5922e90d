"""Media's tables and queries: the records users see, and the jobs that make them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from services.media.domain import Hold, Job, Media, Status
from shared.idempotency import IDEMPOTENCY_DDL
from shared.migrations import Migration

V1 = (  # migration 1: the tables as the service made them at every start before migrations
    """CREATE TABLE IF NOT EXISTS media (
        id UUID PRIMARY KEY,
        user_id UUID NOT NULL,
        kind TEXT NOT NULL,
        type TEXT NOT NULL,
        title TEXT,
        description TEXT,
        status TEXT NOT NULL,
        file_key TEXT,
        thumbnail_key TEXT,
        metadata JSONB NOT NULL DEFAULT '{}',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS media_of_user ON media (user_id, kind, created_at DESC, id DESC)",
    # A credit-costing job: what the ledger answered for its hold, and the input the worker reads.
    """CREATE TABLE IF NOT EXISTS jobs (
        id UUID PRIMARY KEY,
        media_id UUID NOT NULL,
        user_id UUID NOT NULL,
        operation TEXT NOT NULL,
        cost INTEGER NOT NULL,
        input_key TEXT NOT NULL,
        hold TEXT NOT NULL,
        balance INTEGER,
        available INTEGER,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS params JSONB NOT NULL DEFAULT '{}'",
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS hold_expires_at TIMESTAMPTZ",
    "CREATE INDEX IF NOT EXISTS jobs_of_media ON jobs (media_id)",
    *IDEMPOTENCY_DDL,
)
MIGRATIONS = (
    Migration(1, "initial tables", V1),
    # Which account pays for a job (an organization's, when its member asked), and why a hold was refused.
    Migration(2, "jobs paid by organizations", (
        "ALTER TABLE jobs ADD COLUMN account_id UUID",
        "ALTER TABLE jobs ADD COLUMN refusal JSONB",
    )),
)  # fmt: skip

_MEDIA = (
    "id::text AS id, user_id::text AS user_id, kind, type, title, description, status, file_key, thumbnail_key,"
    " metadata, created_at, updated_at"
)
_JOB = (
    "id::text AS id, media_id::text AS media_id, user_id::text AS user_id, operation, cost, input_key, hold,"
    " balance, available, params, hold_expires_at, account_id::text AS account_id, refusal"
)


async def add(conn: AsyncConnection, media: Media, job: Job) -> None:
    await conn.execute(
        "INSERT INTO media (id, user_id, kind, type, title, description, status, metadata, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            media.id, media.user_id, media.kind, media.type, media.title, media.description, media.status,
            Jsonb(media.metadata), media.created_at, media.updated_at,
        ),
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO jobs (id, media_id, user_id, operation, cost, input_key, hold, params, account_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            job.id, job.media_id, job.user_id, job.operation, job.cost, job.input_key, job.hold, Jsonb(job.params),
            job.account_id,
        ),
    )  # fmt: skip


async def job(conn: AsyncConnection, job_id: str, *, lock: bool = False) -> Job | None:
    suffix = " FOR UPDATE" if lock else ""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_JOB} FROM jobs WHERE id = %s{suffix}", (job_id,))
        row = await cur.fetchone()
    return Job(**{**row, "hold": Hold(row["hold"])}) if row else None


async def job_of(conn: AsyncConnection, media_id: str) -> Job | None:
    """The job that makes a record (each record has one)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_JOB} FROM jobs WHERE media_id = %s", (media_id,))
        row = await cur.fetchone()
    return Job(**{**row, "hold": Hold(row["hold"])}) if row else None


async def set_hold(
    conn: AsyncConnection, job_id: str, hold: Hold, balance: int | None, available: int | None,
    expires_at: datetime | None, refusal: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    await conn.execute(
        "UPDATE jobs SET hold = %s, balance = %s, available = %s, hold_expires_at = %s, refusal = %s,"
        " updated_at = now() WHERE id = %s",
        (hold, balance, available, expires_at, Jsonb(refusal) if refusal is not None else None, job_id),
    )


async def in_use(conn: AsyncConnection, input_keys: list[str]) -> set[str]:
    """Those of `input_keys` that a job still being made reads."""
    cursor = await conn.execute(
        "SELECT j.input_key FROM jobs j JOIN media m ON m.id = j.media_id"
        " WHERE j.input_key = ANY(%s) AND m.status = %s",
        (input_keys, Status.PROCESSING),
    )
    return {row[0] for row in await cursor.fetchall()}


async def media(conn: AsyncConnection, media_id: str, *, lock: bool = False) -> Media | None:
    suffix = " FOR UPDATE" if lock else ""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_MEDIA} FROM media WHERE id = %s{suffix}", (media_id,))
        row = await cur.fetchone()
    return Media(**row) if row else None


async def forget(conn: AsyncConnection, user_id: str) -> list[str]:
    """Delete the user's jobs and records; the uploads their jobs read."""
    cursor = await conn.execute("DELETE FROM jobs WHERE user_id = %s RETURNING input_key", (user_id,))
    inputs = [str(key) for (key,) in await cursor.fetchall() if key]
    await conn.execute("DELETE FROM media WHERE user_id = %s", (user_id,))
    return inputs


async def remove(conn: AsyncConnection, media_id: str) -> None:
    await conn.execute("DELETE FROM media WHERE id = %s", (media_id,))


async def finish(conn: AsyncConnection, media: Media) -> None:
    await conn.execute(
        "UPDATE media SET status = %s, file_key = %s, thumbnail_key = %s, metadata = %s, updated_at = %s WHERE id = %s",
        (media.status, media.file_key, media.thumbnail_key, Jsonb(media.metadata), media.updated_at, media.id),
    )


async def page(
    conn: AsyncConnection, user_id: str, kind: str, after: tuple[Any, str] | None, limit: int
) -> list[Media]:
    clauses, params = ["user_id = %s", "kind = %s"], [user_id, kind]
    if after is not None:
        clauses.append("(created_at, id) < (%s, %s)")
        params += [after[0], after[1]]
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_MEDIA} FROM media WHERE {' AND '.join(clauses)} ORDER BY created_at DESC, id DESC LIMIT %s",
            (*params, limit),
        )
        return [Media(**row) for row in await cur.fetchall()]
