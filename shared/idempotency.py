"""Idempotency keys of the commands that change money or credits, where a service keeps them in a table
(payments, media; the ledger keeps each key in the account's own events): a retry under a key finds what
its first use made, the same key asking something else is a conflict.

A request's fingerprint is a hash of what it means (not of when it was asked or by which connection), so a
retry that differs only in those is the same request."""

from __future__ import annotations

import hashlib
import json

from psycopg import AsyncConnection

IDEMPOTENCY_DDL = (
    # scope: whose keys and for what (a user's checkouts, the admins' refunds); subject: what the key made.
    """CREATE TABLE IF NOT EXISTS idempotency_keys (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        subject_id UUID NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (scope, key)
    )""",
    # Before one shape, payments named the subject transaction_id and media job_id.
    """DO $$ DECLARE old TEXT; BEGIN
        SELECT column_name INTO old FROM information_schema.columns WHERE table_schema = current_schema()
            AND table_name = 'idempotency_keys' AND column_name IN ('transaction_id', 'job_id');
        IF old IS NOT NULL THEN EXECUTE format('ALTER TABLE idempotency_keys RENAME COLUMN %I TO subject_id', old);
        END IF;
    END $$""",
    "ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS created_at TIMESTAMPTZ NOT NULL DEFAULT now()",
)


class IdempotencyConflictError(Exception):
    """The key was used before for a different request: 409."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was used for a different request")
        self.key = key


def fingerprint(*meaning: object) -> str:
    """What a request means, as a short hash: its parts in canonical JSON (keys sorted, no spaces)."""
    canonical = json.dumps(list(meaning), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


async def claim(conn: AsyncConnection, scope: str, key: str, meaning: str, subject_id: str) -> str:
    """Record `key` for `subject_id` unless it is held, inside the caller's transaction: the subject it
    stands for (`subject_id` on first use, the first one's on a retry). Raises IdempotencyConflictError when
    it was first used with another `meaning` (a fingerprint). A concurrent claim of the same key waits for
    the first to commit, then reads its row."""
    await conn.execute(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, subject_id) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        (scope, key, meaning, subject_id),
    )
    cursor = await conn.execute(
        "SELECT fingerprint, subject_id::text FROM idempotency_keys WHERE scope = %s AND key = %s", (scope, key)
    )
    row = await cursor.fetchone()
    assert row is not None, "inserted, or there already"
    if row[0] != meaning:
        raise IdempotencyConflictError(key)
    return str(row[1])
