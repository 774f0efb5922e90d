"""Inbox: a consumer records each handled event id in the same transaction as its effect,
so a redelivered event is acknowledged and changes nothing."""

from __future__ import annotations

import uuid

from psycopg import AsyncConnection

INBOX_DDL = (
    """CREATE TABLE IF NOT EXISTS inbox (
        consumer TEXT NOT NULL,
        event_id UUID NOT NULL,
        handled_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer, event_id)
    )""",
)


async def first_delivery(conn: AsyncConnection, consumer: str, event_id: uuid.UUID) -> bool:
    """Claim `event_id` for `consumer` inside the caller's transaction; False if already handled.

    A concurrent duplicate blocks on the primary key until the first transaction ends, then sees
    the conflict: so two copies of a consumer never both apply one event.
    """
    cursor = await conn.execute(
        "INSERT INTO inbox (consumer, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (consumer, event_id),
    )
    return cursor.rowcount == 1
