"""The media worker against real PostgreSQL and JetStream: a held job is made and its completion queued
once however often it is delivered; a job whose hold has run out fails (released, never charged); a
video cancelled while it is transcoded is dropped mid-work."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from services.media import store, worker
from services.media.application import MediaLibrary
from services.media.domain import Cancelled, Hold, Job, JobCancelledError, Media, Status
from services.media.storage import INCOMING, LocalStorage
from services.media.video import PreparedVideo, process_video
from services.media.worker import HOLD_EXPIRED, Worker
from shared.contracts import Envelope
from shared.contracts import media as mc
from shared.outbox import OutboxRelay
from tests.integration.conftest import make_pool
from tests.media_clips import clip


@pytest.fixture
async def media_pool(database_url: str, schema: str) -> AsyncIterator[AsyncConnectionPool]:
    p = await make_pool(database_url, schema, store.MIGRATIONS)
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


def files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


async def outcomes(pool: AsyncConnectionPool) -> list[mc.JobCompleted | mc.JobFailed]:
    async with pool.connection() as conn:
        rows = await (await conn.execute("SELECT payload FROM outbox ORDER BY position")).fetchall()
    found = [Envelope.from_bytes(bytes(row[0])).body() for row in rows]
    return [body for body in found if isinstance(body, mc.JobCompleted | mc.JobFailed)]


async def test_a_held_job_is_made_and_its_completion_queued_once_however_often_delivered(
    media_pool: AsyncConnectionPool, js: JetStreamContext, tmp_path: Path
) -> None:
    worker = Worker(media_pool, OutboxRelay(media_pool, js), LocalStorage(tmp_path / "media"))
    job = await held_generation(media_pool, datetime.now(UTC) + timedelta(minutes=5))
    for _ in range(3):
        await worker.on_work(work(job), 1)
    async with media_pool.connection() as conn:
        made = await store.media(conn, job.media_id)
    assert made is not None and made.status == Status.COMPLETED and made.file_key is not None
    assert (made.metadata["width"], made.metadata["height"]) == (64, 48)
    assert (tmp_path / "media" / made.file_key).stat().st_size == made.metadata["bytes"]
    [completed] = await outcomes(media_pool)
    assert isinstance(completed, mc.JobCompleted) and (completed.job_id, completed.cost) == (job.id, 3)


async def test_a_job_whose_hold_ran_out_fails_and_is_never_charged(
    media_pool: AsyncConnectionPool, js: JetStreamContext, tmp_path: Path
) -> None:
    worker = Worker(media_pool, OutboxRelay(media_pool, js), LocalStorage(tmp_path / "media"))
    job = await held_generation(media_pool, datetime.now(UTC) + timedelta(seconds=5))  # within the settle margin
    await worker.on_work(work(job), 1)
    await worker.on_work(work(job), 2)
    async with media_pool.connection() as conn:
        failed = await store.media(conn, job.media_id)
    assert failed is not None and (failed.status, failed.file_key) == (Status.FAILED, None)
    assert failed.metadata["error"] == HOLD_EXPIRED
    [outcome] = await outcomes(media_pool)
    assert isinstance(outcome, mc.JobFailed) and outcome.job_id == job.id  # the ledger releases; nothing captured
    assert pngs(tmp_path / "media") == []


async def test_a_video_cancelled_while_it_is_transcoded_is_dropped_mid_work(
    media_pool: AsyncConnectionPool, js: JetStreamContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path / "media")
    now, user = datetime.now(UTC), str(uuid.uuid4())
    media = Media(str(uuid.uuid4()), user, "video", "UPLOADED", "loop", None, Status.PROCESSING, None, None, {},
                  now, now)  # fmt: skip
    job = Job(str(uuid.uuid4()), media.id, user, "video_processing", 2, f"{INCOMING}{uuid.uuid4()}", Hold.REQUESTED)
    storage.put(job.input_key, clip(2.0))
    async with media_pool.connection() as conn, conn.transaction():
        await store.add(conn, media, job)
        await store.set_hold(conn, job.id, Hold.RESERVED, None, None, now + timedelta(hours=1))
    started, outcome = threading.Event(), []

    def transcoding(data: bytes, params: dict[str, object], cancelled: Cancelled) -> PreparedVideo:
        """The real operation, begun only once the cancellation has reached the worker's watch."""
        started.set()
        deadline = time.monotonic() + 15
        while not cancelled() and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            return process_video(data, params, cancelled)
        except JobCancelledError as exc:
            outcome.append(exc)
            raise

    monkeypatch.setitem(worker.OPERATIONS, "video_processing", transcoding)
    working = asyncio.create_task(Worker(media_pool, OutboxRelay(media_pool, js), storage).on_work(work(job), 1))
    assert await asyncio.to_thread(started.wait, 15)
    async with media_pool.connection() as conn, conn.transaction():  # what the API's cancel records
        current = await store.media(conn, media.id, lock=True)
        assert current is not None
        await store.finish(conn, replace(current, status=Status.CANCELLED))
    await asyncio.wait_for(working, timeout=30)

    assert len(outcome) == 1  # the transcode itself stopped, at its next frame
    async with media_pool.connection() as conn:
        final = await store.media(conn, media.id)
    assert final is not None and (final.status, final.file_key) == (Status.CANCELLED, None)
    assert await outcomes(media_pool) == []  # no completion or failure: the API's cancel released the hold
    assert files(tmp_path / "media") == []  # its upload dropped, nothing made kept


async def test_the_sweep_removes_only_uploads_no_job_being_made_reads(
    media_pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """A process killed between writing an upload and recording its job leaves a file nobody will read:
    the sweep removes it (and a half-written body) once untouched for an hour, never one a job still reads."""
    storage = LocalStorage(tmp_path / "media")
    library = MediaLibrary(media_pool, cast(Any, None), storage)
    now, user = datetime.now(UTC), str(uuid.uuid4())

    async def upload(name: str, status: Status) -> str:
        key = f"{INCOMING}{name}"
        storage.put(key, b"bytes of " + name.encode())
        media = Media(str(uuid.uuid4()), user, "image", "UPLOADED", name, None, status, None, None, {}, now, now)
        job = Job(str(uuid.uuid4()), media.id, user, "image_upload", 1, key, Hold.RESERVED)
        async with media_pool.connection() as conn, conn.transaction():
            await store.add(conn, media, job)
        return key

    read = await upload("being-made", Status.PROCESSING)
    done = await upload("made-but-not-dropped", Status.COMPLETED)  # its worker died before it dropped the upload
    orphan = f"{INCOMING}never-recorded"
    storage.put(orphan, b"an upload whose process died")
    half = storage.writer(f"{INCOMING}cut-off")
    half.write(b"half a body")  # the partial file of a process killed mid-body
    young = f"{INCOMING}just-written"
    hour_ago = time.time() - 3601
    for path in (tmp_path / "media" / "incoming").iterdir():
        os.utime(path, (hour_ago, hour_ago))
    storage.put(young, b"an upload whose job is being recorded now")

    removed = await library.sweep_incoming()

    assert sorted(removed) == sorted([done, orphan, f"{INCOMING}.cut-off.partial"])
    left = sorted(p.name for p in (tmp_path / "media" / "incoming").iterdir())
    assert left == sorted([read.removeprefix(INCOMING), young.removeprefix(INCOMING)])
    assert storage.get(read) == b"bytes of being-made"
    assert await library.sweep_incoming() == []
