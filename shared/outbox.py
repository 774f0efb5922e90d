"""Transactional outbox: an event is stored in the same transaction as the state it describes,
and a relay publishes pending rows to JetStream in order."""

from __future__ import annotations

import json
import logging

from nats.js import JetStreamContext
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from shared import db
from shared.bus import publish
from shared.contracts import Envelope
from shared.relay import Relay
from shared.telemetry import inject_context

log = logging.getLogger(__name__)

OUTBOX_DDL = (
    """CREATE TABLE IF NOT EXISTS outbox (
        position BIGSERIAL PRIMARY KEY,
        event_id UUID NOT NULL UNIQUE,
        subject TEXT NOT NULL,
        payload BYTEA NOT NULL,
        headers JSONB NOT NULL DEFAULT '{}',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        sent_at TIMESTAMPTZ
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (position) WHERE sent_at IS NULL",
)


async def add(conn: AsyncConnection, envelope: Envelope) -> None:
    """Queue `envelope` inside the caller's open transaction."""
    await conn.execute(
        "INSERT INTO outbox (event_id, subject, payload, headers) VALUES (%s, %s, %s, %s)",
        (envelope.id, envelope.type, envelope.to_bytes(), json.dumps(inject_context({}))),
    )


class OutboxRelay(Relay):
    """Publishes pending outbox rows in position order, then marks them sent.

    A crash between publish and mark re-publishes with the same message id, which JetStream drops
    as a duplicate. A transaction-scoped advisory lock lets only one relay per schema work at a time,
    so several copies of a service never interleave (and so never reorder) their publishes.
    """

    def __init__(self, pool: AsyncConnectionPool, js: JetStreamContext, batch: int = 200) -> None:
        super().__init__(poll_interval=0.5)
        self._pool = pool
        self._js = js
        self._batch = batch

    async def backlog(self) -> int:
        async with self._pool.connection() as conn:
            cursor = await conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def relay_once(self) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            if not await db.try_lock(conn, "outbox"):
                return 0
            cursor = await conn.execute(
                "SELECT position, event_id, subject, payload, headers FROM outbox"
                " WHERE sent_at IS NULL ORDER BY position LIMIT %s",
                (self._batch,),
            )
            rows = await cursor.fetchall()
            seqs = []
            for _, event_id, subject, payload, headers in rows:
                # A re-publish JetStream drops as a duplicate answers with the first one's sequence.
                ack = await publish(self._js, subject, bytes(payload), msg_id=str(event_id), headers=headers)
                seqs.append(ack.seq)
            if rows:
                await conn.execute(
                    "UPDATE outbox SET sent_at = now(), stream_seq = sent.seq"
                    " FROM unnest(%s::bigint[], %s::bigint[]) AS sent (position, seq)"
                    " WHERE outbox.position = sent.position",
                    ([r[0] for r in rows], seqs),
                )
            return len(rows)
