"""The media worker against real PostgreSQL and JetStream: a held job is made and its completion queued
once however often it is delivered, and a job whose hold has run out fails (released, never charged)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from services.media import store
from services.media.domain import Hold, Job, Media, Status
from services.media.storage import LocalStorage
from services.media.worker import HOLD_EXPIRED, Worker
from shared.contracts import Envelope
from shared.contracts import media as mc
from shared.outbox import OutboxRelay
from tests.integration.conftest import make_pool


@pytest.fixture
async def media_pool(database_url: str, schema: str) -> AsyncIterator[AsyncConnectionPool]:
    p = await make_pool(database_url, schema, store.DDL)
    yield p
    await p.close()


async def held_generation(pool: AsyncConnectionPool, expires_at: datetime) -> Job:
    now, user = datetime.now(UTC), str(uuid.uuid4())
    media = Media(str(uuid.uuid4()), user, "image", "GENERATED", "dunes", None, Status.PROCESSING, None, None, {},
                  now, now)  # fmt: skip
    job = Job(str(uuid.uuid4()), media.id, user, "image_generation", 3, "", Hold.REQUESTED,
              params={"prompt": "dunes", "seed": 1, "width": 64, "height": 48})  # fmt: skip
    async with pool.connection() as conn, conn.transaction():
        await store.add(conn, media, job)
        await store.set_hold(conn, job.id, Hold.RESERVED, None, None, expires_at)
    return job


def work(job: Job) -> Envelope:
    return Envelope.wrap(mc.WorkQueued(job_id=job.id, user_id=job.user_id, operation=job.operation),
                         user_id=job.user_id)  # fmt: skip


def pngs(root: Path) -> list[Path]:
    return list(root.rglob("*.png"))


async def outcomes(pool: AsyncConnectionPool) -> list[mc.JobCompleted | mc.JobFailed]:
    async with pool.connection() as conn:
        rows = await (await conn.execute("SELECT payload FROM outbox ORDER BY position")).fetchall()
    found = [Envelope.from_bytes(bytes(row[0])).body() for row in rows]
    return [body for body in found if isinstance(body, mc.JobCompleted | mc.JobFailed)]


async def test_a_held_job_is_made_and_its_completion_queued_once_however_often_delivered(
    media_pool: AsyncConnectionPool, js: JetStreamContext, tmp_path: Path
) -> None:
    worker = Worker(media_pool, OutboxRelay(media_pool, js), LocalStorage(tmp_path))
    job = await held_generation(media_pool, datetime.now(UTC) + timedelta(minutes=5))
    for _ in range(3):
        await worker.on_work(work(job), 1)
    async with media_pool.connection() as conn:
        made = await store.media(conn, job.media_id)
    assert made is not None and made.status == Status.COMPLETED and made.file_key is not None
    assert (made.metadata["width"], made.metadata["height"]) == (64, 48)
    assert (tmp_path / made.file_key).stat().st_size == made.metadata["bytes"]
    [completed] = await outcomes(media_pool)
    assert isinstance(completed, mc.JobCompleted) and (completed.job_id, completed.cost) == (job.id, 3)


async def test_a_job_whose_hold_ran_out_fails_and_is_never_charged(
    media_pool: AsyncConnectionPool, js: JetStreamContext, tmp_path: Path
) -> None:
    worker = Worker(media_pool, OutboxRelay(media_pool, js), LocalStorage(tmp_path))
    job = await held_generation(media_pool, datetime.now(UTC) + timedelta(seconds=5))  # within the settle margin
    await worker.on_work(work(job), 1)
    await worker.on_work(work(job), 2)
    async with media_pool.connection() as conn:
        failed = await store.media(conn, job.media_id)
    assert failed is not None and (failed.status, failed.file_key) == (Status.FAILED, None)
    assert failed.metadata["error"] == HOLD_EXPIRED
    [outcome] = await outcomes(media_pool)
    assert isinstance(outcome, mc.JobFailed) and outcome.job_id == job.id  # the ledger releases; nothing captured
    assert pngs(tmp_path) == []
