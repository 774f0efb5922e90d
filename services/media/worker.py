"""The media worker: a process of its own (`python -m services.media.worker`, or uvicorn with its factory; several
may run) that takes held jobs from the MEDIAWORK queue, does the work off the event loop, and records
the outcome with `media.job.completed` (the ledger captures the hold) or `media.job.failed` (it
releases it) in one transaction. A job redelivered after it was recorded changes nothing."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from services.media import store
from services.media.background import remove_background
from services.media.domain import Cancelled, Job, JobCancelledError, Media, Status, UnusableInputError
from services.media.extend import extend
from services.media.generate import generate
from services.media.images import prepare_upload, transform
from services.media.storage import LocalStorage, Storage, drop_upload, made_keys
from services.media.video import process_video
from shared import metrics, outbox, telemetry
from shared.bus import Subscription
from shared.contracts import Envelope, EventData
from shared.contracts import media as mc
from shared.http import create_worker_app
from shared.outbox import OutboxRelay
from shared.runtime import Runtime
from shared.settings import WORKER_PORTS, Settings

SERVICE = "media"  # its schema, streams and outbox are media's
log = logging.getLogger(__name__)


class Made(Protocol):
    """What an operation makes: the file, its PNG thumbnail, and what to record of them."""

    @property
    def original(self) -> bytes: ...
    @property
    def thumbnail(self) -> bytes: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @property
    def extension(self) -> str: ...


# Each operation: the work on the input's bytes and the job's params, off the event loop. Raising
# UnusableInputError fails the job; JobCancelledError (when `cancelled()` said so) drops it.
OPERATIONS: dict[str, Callable[[bytes, dict[str, Any], Cancelled], Made]] = {
    "image_upload": prepare_upload,
    "image_transformation": transform,
    "image_generation": generate,
    "image_extension": extend,
    "background_removal": remove_background,
    "video_processing": process_video,
}
HOLD_EXPIRED = "the credit hold expired before the work was done"
CANCEL_POLL_SECONDS = 0.5


class Worker:
    def __init__(self, pool: AsyncConnectionPool, relay: OutboxRelay, storage: Storage) -> None:
        self._pool = pool
        self._relay = relay
        self._storage = storage

    def subscription(self) -> Subscription:
        return Subscription(
            "MEDIAWORK", "media-worker", (mc.WorkQueued.type,), self.on_work, give_up=self.fail, fetch=1
        )

    async def fail(self, envelope: Envelope, reason: str) -> None:
        """After the last attempt (a worker that keeps dying or erring on it): the job fails and the ledger
        releases its hold."""
        if found := await self._load(envelope):
            await self._fail(*found, reason)
            metrics.MEDIA_JOBS.add(1, {"operation": found[0].operation, "outcome": "gave_up"})

    async def _load(self, envelope: Envelope) -> tuple[Job, Media] | None:
        """The queued job and the record it makes (None: not media's, or gone)."""
        work = envelope.body()
        assert isinstance(work, mc.WorkQueued)
        async with self._pool.connection() as conn:
            job = await store.job(conn, work.job_id)
            media = await store.media(conn, job.media_id) if job else None
        return (job, media) if job is not None and media is not None else None

    async def _fail(self, job: Job, media: Media, reason: str) -> None:
        failed = replace(media, status=Status.FAILED, metadata={**media.metadata, "error": reason[:500]},
                         updated_at=datetime.now(UTC))  # fmt: skip
        outcome = mc.JobFailed(job_id=job.id, user_id=job.user_id, operation=job.operation, reason=reason[:500],
                               account_id=job.account_id)  # fmt: skip
        await self._record(media, failed, outcome)
        await drop_upload(self._storage, job.input_key)

    async def on_work(self, envelope: Envelope, _seq: int) -> None:
        if (found := await self._load(envelope)) is None:
            return
        job, media = found
        if media.status != Status.PROCESSING:  # recorded before (a redelivery), or cancelled before it began
            await drop_upload(self._storage, job.input_key)
            return
        started = time.monotonic()
        with telemetry.span(f"media {job.operation}") as span:
            outcome = await self._work(job, media)
            span.set_attribute("media.outcome", outcome)
        labels = {"operation": job.operation}
        metrics.MEDIA_JOBS.add(1, {**labels, "outcome": outcome})
        metrics.MEDIA_JOB_DURATION.record(time.monotonic() - started, labels)

    async def _work(self, job: Job, media: Media) -> str:
        """Make the job's file and record its outcome: completed, failed, expired (its hold ran out) or
        cancelled."""
        if not job.hold_lasts(datetime.now(UTC)):
            await self._fail(job, media, HOLD_EXPIRED)
            return "expired"
        data = await asyncio.to_thread(self._storage.get, job.input_key) if job.input_key else b""
        cancelled = threading.Event()
        watch = asyncio.create_task(self._watch(media.id, cancelled))
        try:
            prepared = await asyncio.to_thread(OPERATIONS[job.operation], data, job.params, cancelled.is_set)
        except UnusableInputError as exc:
            await self._fail(job, media, str(exc))
            return "failed"
        except JobCancelledError:  # the API recorded the cancellation and asked for the release
            await drop_upload(self._storage, job.input_key)
            return "cancelled"
        finally:
            watch.cancel()
        if not job.hold_lasts(datetime.now(UTC)):
            await self._fail(job, media, HOLD_EXPIRED)  # the work is thrown away: it can no longer be paid for
            return "expired"
        file_key, thumbnail_key = made_keys(media.user_id, media.id, prepared.extension)
        await asyncio.to_thread(self._storage.put, file_key, prepared.original)
        await asyncio.to_thread(self._storage.put, thumbnail_key, prepared.thumbnail)
        done = replace(
            media, status=Status.COMPLETED, file_key=file_key, thumbnail_key=thumbnail_key,
            metadata={**media.metadata, **prepared.metadata}, updated_at=datetime.now(UTC),
        )  # fmt: skip
        completed = mc.JobCompleted(
            job_id=job.id,
            user_id=job.user_id,
            operation=job.operation,
            cost=job.cost,
            resource_id=media.id,
            account_id=job.account_id,
        )
        recorded = await self._record(media, done, completed)
        if not recorded:  # cancelled meanwhile: what was made goes
            await asyncio.to_thread(self._storage.delete, file_key)
            await asyncio.to_thread(self._storage.delete, thumbnail_key)
        await drop_upload(self._storage, job.input_key)
        return "completed" if recorded else "cancelled"

    async def _watch(self, media_id: str, cancelled: threading.Event) -> None:
        """While an operation works: tell it when its job is cancelled (the API records that)."""
        while not cancelled.is_set():
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            async with self._pool.connection() as conn:
                media = await store.media(conn, media_id)
            if media is None or media.status == Status.CANCELLED:
                cancelled.set()

    async def _record(self, before: Media, after: Media, outcome: EventData) -> bool:
        """The outcome and its event in one transaction; a second worker with the same job finds it done
        (False: it was recorded, or cancelled, before)."""
        async with self._pool.connection() as conn, conn.transaction():
            current = await store.media(conn, before.id, lock=True)
            if current is None or current.status != Status.PROCESSING:
                return False
            await store.finish(conn, after)
            await outbox.add(conn, Envelope.wrap(outcome, user_id=after.user_id, correlation_id=f"media:{after.id}"))
        self._relay.wake()
        return True


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # read from the environment

    async def start(app: FastAPI, rt: Runtime) -> None:
        relay = rt.start_outbox_relay()
        rt.consume(Worker(rt.pool, relay, LocalStorage(settings.data_dir / "media")).subscription())

    return create_worker_app("media-worker", SERVICE, settings, start)


def main() -> None:
    """`python -m services.media.worker`: one worker, its health endpoints on MEDIA_WORKER_PORT (8005)."""
    import os

    import uvicorn

    port = int(os.environ.get("MEDIA_WORKER_PORT") or WORKER_PORTS["media-worker"])
    uvicorn.run(f"{__name__}:create_app", factory=True, host=os.environ.get("HOST", "127.0.0.1"), port=port)


if __name__ == "__main__":
    main()
