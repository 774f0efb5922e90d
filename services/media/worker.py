"""The media worker: a process of its own (`uvicorn --factory services.media.worker:create_app`; several
may run) that takes held jobs from the MEDIAWORK queue, does the work off the event loop, and records
the outcome with `media.job.completed` (the ledger captures the hold) or `media.job.failed` (it
releases it) in one transaction. A job redelivered after it was recorded changes nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool

from services.media import store
from services.media.background import remove_background
from services.media.domain import Job, Media, Status
from services.media.extend import extend
from services.media.generate import generate
from services.media.images import ImageRejectedError, PreparedImage, prepare_upload, transform
from services.media.storage import LocalStorage, Storage
from shared import outbox, runtime, telemetry
from shared.bus import Subscription
from shared.contracts import Envelope, EventData
from shared.contracts import media as mc
from shared.outbox import OutboxRelay
from shared.settings import Settings

SERVICE = "media"  # its schema, streams and outbox are media's
log = logging.getLogger(__name__)
# Each operation: the work on the input's bytes and the job's params, off the event loop. Raising
# ImageRejectedError fails the job.
OPERATIONS: dict[str, Callable[[bytes, dict[str, Any]], PreparedImage]] = {
    "image_upload": prepare_upload,
    "image_transformation": transform,
    "image_generation": generate,
    "image_extension": extend,
    "background_removal": remove_background,
}
HOLD_EXPIRED = "the credit hold expired before the work was done"
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}


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
        work = envelope.body()
        assert isinstance(work, mc.WorkQueued)
        async with self._pool.connection() as conn:
            job = await store.job(conn, work.job_id)
            media = await store.media(conn, job.media_id) if job else None
        if job is None or media is None:
            return
        await self._fail(job, media, reason)

    async def _fail(self, job: Job, media: Media, reason: str) -> None:
        failed = replace(media, status=Status.FAILED, metadata={**media.metadata, "error": reason[:500]},
                         updated_at=datetime.now(UTC))  # fmt: skip
        outcome = mc.JobFailed(job_id=job.id, user_id=job.user_id, operation=job.operation, reason=reason[:500])
        await self._record(media, failed, outcome)

    async def on_work(self, envelope: Envelope, _seq: int) -> None:
        work = envelope.body()
        assert isinstance(work, mc.WorkQueued)
        async with self._pool.connection() as conn:
            job = await store.job(conn, work.job_id)
            media = await store.media(conn, job.media_id) if job else None
        if job is None or media is None or media.status != Status.PROCESSING:
            return  # recorded before: a redelivery
        if not job.hold_lasts(datetime.now(UTC)):
            await self._fail(job, media, HOLD_EXPIRED)
            return
        data = await asyncio.to_thread(self._storage.get, job.input_key) if job.input_key else b""
        try:
            prepared = await asyncio.to_thread(OPERATIONS[job.operation], data, job.params)
        except ImageRejectedError as exc:
            await self._fail(job, media, str(exc))
            return
        if not job.hold_lasts(datetime.now(UTC)):
            await self._fail(job, media, HOLD_EXPIRED)  # the work is thrown away: it can no longer be paid for
            return
        base = f"{media.user_id}/{media.id}"
        file_key = f"{base}/original.{EXTENSIONS[prepared.info.format]}"
        thumbnail_key = f"{base}/thumbnail.png"
        await asyncio.to_thread(self._storage.put, file_key, prepared.original)
        await asyncio.to_thread(self._storage.put, thumbnail_key, prepared.thumbnail)
        done = replace(
            media, status=Status.COMPLETED, file_key=file_key, thumbnail_key=thumbnail_key,
            metadata={**media.metadata, **prepared.metadata}, updated_at=datetime.now(UTC),
        )  # fmt: skip
        completed = mc.JobCompleted(
            job_id=job.id, user_id=job.user_id, operation=job.operation, cost=job.cost, resource_id=media.id
        )
        await self._record(media, done, completed)

    async def _record(self, before: Media, after: Media, outcome: EventData) -> None:
        """The outcome and its event in one transaction; a second worker with the same job finds it done."""
        async with self._pool.connection() as conn, conn.transaction():
            current = await store.media(conn, before.id, lock=True)
            if current is None or current.status != Status.PROCESSING:
                return
            await store.finish(conn, after)
            await outbox.add(conn, Envelope.wrap(outcome, user_id=after.user_id, correlation_id=f"media:{after.id}"))
        self._relay.wake()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # read from the environment
    telemetry.setup("media-worker")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running(SERVICE, settings, store.DDL) as rt:
            relay = rt.start_outbox_relay()
            rt.consume(Worker(rt.pool, relay, LocalStorage(settings.data_dir / "media")).subscription())
            app.state.runtime = rt
            yield

    app = FastAPI(title="creditstream media worker", lifespan=lifespan, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": "media-worker"}

    @app.get("/readyz")
    async def readyz(request: Request) -> Any:
        try:
            await request.app.state.runtime.check_ready()
        except Exception as exc:
            return JSONResponse({"status": "not ready", "detail": str(exc)}, status_code=503)
        return {"status": "ready", "service": "media-worker"}

    return app
