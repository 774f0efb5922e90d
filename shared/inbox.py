"""Inbox: "have I seen this id" for everything a service takes in, written once. A consumer records each
handled event id, a webhook route each delivery id (Svix's, Stripe's), an auto-recharge each crossing it
acted on, in the same transaction as the effect, so a redelivery is acknowledged and changes nothing."""

from __future__ import annotations

import uuid

from psycopg import AsyncConnection

INBOX_DDL = (
    """CREATE TABLE IF NOT EXISTS inbox (
        consumer TEXT NOT NULL,
        event_id TEXT NOT NULL,
        handled_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer, event_id)
    )""",
    # It held envelope ids only (UUIDs) before webhook deliveries and crossings moved in.
    """DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'inbox' AND column_name = 'event_id' AND data_type = 'uuid') THEN
            ALTER TABLE inbox ALTER COLUMN event_id TYPE TEXT;
        END IF;
    END $$""",
)


async def first_delivery(conn: AsyncConnection, consumer: str, event_id: uuid.UUID | str) -> bool:
    """Claim `event_id` for `consumer` inside the caller's transaction; False if already handled.

    A concurrent duplicate blocks on the primary key until the first transaction ends, then sees
    the conflict: so two copies of a consumer never both apply one event.
    """
    cursor = await conn.execute(
        "INSERT INTO inbox (consumer, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (consumer, str(event_id)),
    )
    return cursor.rowcount == 1
