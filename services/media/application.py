"""Media's use cases, one per command (COMMAND_HANDLERS). A credit-costing request stores its record and
job and queues `media.job.requested` in one transaction, then waits (bounded) for the ledger's answer: a
hold, or a refusal. The API never reads a balance to decide: it reserves."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool

from services.media import store
from services.media.domain import (
    CancelVideo,
    Command,
    Extend,
    Generate,
    Hold,
    InsufficientCreditsError,
    Job,
    Media,
    MediaNotFoundError,
    NotProcessingError,
    NotReadyError,
    OnImage,
    ProcessVideo,
    RecordHold,
    RemoveBackground,
    Status,
    Transform,
    Upload,
)
from services.media.images import inspect
from services.media.storage import Storage, drop_upload, upload_key
from services.media.video import sniff
from shared import db, idempotency, outbox
from shared.contracts import Envelope, derive_id
from shared.contracts import media as mc
from shared.credits import HOLD_SECONDS, OPERATION_COSTS
from shared.idempotency import fingerprint
from shared.inbox import first_delivery
from shared.outbox import OutboxRelay

# How long a request waits for the ledger's answer before it answers 202 with the hold still pending.
ANSWER_WAIT_SECONDS = 10.0
R = TypeVar("R")


@dataclass(frozen=True)
class Request:
    """What a credit-costing request asks, as its idempotency key's fingerprint sees it."""

    operation: str
    type: str
    title: str | None
    description: str | None
    params: dict[str, Any]
    input: str  # what it works on: the upload's hash, the source image's id, or nothing
    kind: str = "image"  # what it makes: an image or a video


class MediaLibrary:
    def __init__(self, pool: AsyncConnectionPool, relay: OutboxRelay, storage: Storage) -> None:
        self._pool = pool
        self._relay = relay
        self.storage = storage

    async def handle(self, command: Command[R]) -> R:
        answer: R = await COMMAND_HANDLERS[type(command)](self, command)
        return answer

    async def _upload(self, c: Upload) -> Media:
        """Check the file, store it and ask the ledger to hold the upload's cost; the record once it is held.
        Raises ImageRejectedError (nothing stored, nothing asked) or InsufficientCreditsError (nothing kept)."""
        info = inspect(c.data)
        request = Request("image_upload", "UPLOADED", c.title, c.description, {}, hashlib.sha256(c.data).hexdigest())
        metadata = {"format": info.format, "width": info.width, "height": info.height, "bytes": len(c.data)}
        return await self._request(c.user_id, c.key, request, metadata, data=c.data)

    async def _process_video(self, c: ProcessVideo) -> Media:
        """Take a video file (only its signature is checked here: decoding is the worker's) and ask the
        ledger to hold its processing's cost. Raises VideoRejectedError or InsufficientCreditsError."""
        container = sniff(c.data)
        digest = hashlib.sha256(c.data).hexdigest()
        request = Request("video_processing", "UPLOADED", c.title, c.description, {}, digest, kind="video")
        metadata = {"container": container, "bytes": len(c.data)}
        return await self._request(c.user_id, c.key, request, metadata, data=c.data)

    async def _cancel_video(self, c: CancelVideo) -> Media:
        """Cancel a video while it is processed: recorded with `media.job.cancelled` in one transaction
        (the ledger releases the hold; a worker on it drops its work). Cancelling it again answers the
        same; one that has ended raises NotProcessingError."""
        async with self._pool.connection() as conn, conn.transaction():
            media = await store.media(conn, c.video_id, lock=True)
            if media is None or media.user_id != c.user_id or media.kind != "video":
                raise MediaNotFoundError(c.video_id)
            if media.status == Status.CANCELLED:
                return media
            if media.status != Status.PROCESSING:
                raise NotProcessingError(media)
            job = await store.job_of(conn, c.video_id)
            assert job is not None, "stored with its record"
            cancelled = replace(media, status=Status.CANCELLED, updated_at=datetime.now(UTC))
            await store.finish(conn, cancelled)
            event = mc.JobCancelled(job_id=job.id, user_id=c.user_id, operation=job.operation)
            await outbox.add(conn, Envelope.wrap(event, user_id=c.user_id, correlation_id=f"media:{c.video_id}"))
        self._relay.wake()
        return cancelled

    async def _transform(self, c: Transform) -> Media:
        """A transformed copy of one of the user's images."""
        return await self._from_source(c, "image_transformation", "TRANSFORMED", c.spec)

    async def _extend(self, c: Extend) -> Media:
        """A copy of one of the user's images on a bigger canvas, its new border filled from its edges."""
        sides = {"left": c.left, "right": c.right, "top": c.top, "bottom": c.bottom}
        return await self._from_source(c, "image_extension", "EXTENDED", sides)

    async def _remove_background(self, c: RemoveBackground) -> Media:
        """A copy of one of the user's images with its background transparent (PNG)."""
        return await self._from_source(c, "background_removal", "BACKGROUND_REMOVED", {"method": c.method})

    async def _from_source(self, c: OnImage, operation: str, kind: str, params: dict[str, Any]) -> Media:
        source = await self.get(c.user_id, c.image_id)
        if source.kind != "image":
            raise MediaNotFoundError(c.image_id)  # the image operations work on images only
        if source.file_key is None:
            raise NotReadyError(c.image_id)
        request = Request(operation, kind, source.title, source.description, params, c.image_id)
        return await self._request(c.user_id, c.key, request, {"source_id": c.image_id}, input_key=source.file_key)

    async def _generate(self, c: Generate) -> Media:
        params = {"prompt": c.prompt, "seed": c.seed, "width": c.width, "height": c.height}
        request = Request("image_generation", "GENERATED", c.prompt[:200], None, params, "")
        return await self._request(c.user_id, c.key, request, {"prompt": c.prompt, "seed": c.seed})

    async def _record_hold(self, c: RecordHold) -> None:
        """The ledger's answer, in one transaction with its inbox record (a redelivered answer changes
        nothing): a held job goes to the workers' queue; a refused one keeps nothing of its request."""
        refused_input: str | None = None
        async with self._pool.connection() as conn, conn.transaction():
            if not await first_delivery(conn, c.consumer, c.answer_id):
                return
            job = await store.job(conn, c.job_id, lock=True)
            if job is None or job.hold is not Hold.REQUESTED:
                return  # not media's job, or answered before
            await store.set_hold(conn, job.id, c.hold, c.balance, c.available, c.expires_at)
            if c.hold is Hold.RESERVED:
                work = mc.WorkQueued(job_id=job.id, user_id=job.user_id, operation=job.operation)
                queued = Envelope.wrap(work, user_id=job.user_id, event_id=derive_id("mediawork", job.id))
                await outbox.add(conn, queued)
            else:
                await store.remove(conn, job.media_id)
                refused_input = job.input_key
        if refused_input is not None:
            await drop_upload(self.storage, refused_input)
        self._relay.wake()

    async def _request(
        self, user_id: str, key: str, request: Request, metadata: dict[str, Any], *,
        data: bytes | None = None, input_key: str = "",
    ) -> Media:  # fmt: skip
        """Store the record, its job and `media.job.requested` in one transaction (with the input file, if
        any), then wait for the ledger's answer. A retry under `key` waits for the same job's answer."""
        meaning = fingerprint(dataclasses.asdict(request))
        job_id, media_id, now = str(uuid.uuid4()), str(uuid.uuid4()), datetime.now(UTC)
        async with self._pool.connection() as conn, conn.transaction():
            held_job = await idempotency.claim(conn, f"media:{user_id}", key, meaning, job_id)
            if held_job == job_id:
                if data is not None:
                    input_key = upload_key(job_id)
                    await asyncio.to_thread(self.storage.put, input_key, data)
                media = Media(media_id, user_id, request.kind, request.type, request.title, request.description,
                              Status.PROCESSING, None, None, metadata, now, now)  # fmt: skip
                cost = OPERATION_COSTS[request.operation]
                job = Job(job_id, media_id, user_id, request.operation, cost, input_key, Hold.REQUESTED,
                          params=request.params)  # fmt: skip
                await store.add(conn, media, job)
                requested = mc.JobRequested(
                    job_id=job_id, user_id=user_id, operation=request.operation, cost=cost, resource_type=request.kind,
                    resource_id=media_id, hold_seconds=HOLD_SECONDS[request.operation],
                )  # fmt: skip
                await outbox.add(conn, Envelope.wrap(requested, user_id=user_id, correlation_id=f"job:{job_id}"))
        self._relay.wake()
        if held_job != job_id:
            return await self._answer(held_job)
        try:
            return await self._answer(job_id)
        except db.UNAVAILABLE:
            # The job is stored and goes on without us: a 503 would tell the client nothing was done (the
            # fault suite saw such a job charged). Answer it as the wait running out does.
            return media

    async def _answer(self, job_id: str) -> Media:
        deadline = time.monotonic() + ANSWER_WAIT_SECONDS
        while True:
            async with self._pool.connection() as conn:
                job = await store.job(conn, job_id)
                assert job is not None, "stored with its key"
                if job.hold is Hold.REJECTED:
                    raise InsufficientCreditsError(job)
                if job.hold is Hold.RESERVED or time.monotonic() > deadline:
                    media = await store.media(conn, job.media_id)
                    if media is None:
                        raise MediaNotFoundError(job.media_id)
                    return media
            await asyncio.sleep(0.05)  # the answer is written by this service's ledger consumer, maybe elsewhere

    async def get(self, user_id: str, media_id: str) -> Media:
        async with self._pool.connection() as conn:
            media = await store.media(conn, media_id)
        if media is None or media.user_id != user_id:
            raise MediaNotFoundError(media_id)
        return media

    async def page(self, user_id: str, kind: str, after: tuple[datetime, str] | None, limit: int) -> list[Media]:
        async with self._pool.connection() as conn:
            return await store.page(conn, user_id, kind, after, limit)


# Every command and the use case that answers it.
COMMAND_HANDLERS: dict[type[Command[Any]], Callable[[MediaLibrary, Any], Awaitable[Any]]] = {
    Upload: MediaLibrary._upload,
    ProcessVideo: MediaLibrary._process_video,
    Transform: MediaLibrary._transform,
    RemoveBackground: MediaLibrary._remove_background,
    Extend: MediaLibrary._extend,
    Generate: MediaLibrary._generate,
    CancelVideo: MediaLibrary._cancel_video,
    RecordHold: MediaLibrary._record_hold,
}
