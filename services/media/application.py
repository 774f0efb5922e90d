"""Media's use cases. A credit-costing request stores its record and job and queues
`media.job.requested` in one transaction, then waits (bounded) for the ledger's answer: a hold, or a
refusal. The API never reads a balance to decide: it reserves."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from services.media import store
from services.media.domain import (
    Hold,
    InsufficientCreditsError,
    Job,
    Media,
    MediaNotFoundError,
    NotProcessingError,
    NotReadyError,
    Status,
)
from services.media.images import inspect
from services.media.storage import Storage, upload_key
from services.media.video import sniff
from shared import db, idempotency, outbox
from shared.contracts import Envelope
from shared.contracts import media as mc
from shared.credits import HOLD_SECONDS, OPERATION_COSTS
from shared.idempotency import fingerprint
from shared.outbox import OutboxRelay

# How long a request waits for the ledger's answer before it answers 202 with the hold still pending.
ANSWER_WAIT_SECONDS = 10.0


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

    async def upload_image(
        self, user_id: str, data: bytes, title: str | None, description: str | None, key: str
    ) -> Media:
        """Check the file, store it and ask the ledger to hold the upload's cost; the record once it is held.
        Raises ImageRejectedError (nothing stored, nothing asked) or InsufficientCreditsError (nothing kept)."""
        info = inspect(data)
        request = Request("image_upload", "UPLOADED", title, description, {}, hashlib.sha256(data).hexdigest())
        metadata = {"format": info.format, "width": info.width, "height": info.height, "bytes": len(data)}
        return await self._request(user_id, key, request, metadata, data=data)

    async def upload_video(
        self, user_id: str, data: bytes, title: str | None, description: str | None, key: str
    ) -> Media:
        """Take a video file (only its signature is checked here: decoding is the worker's) and ask the
        ledger to hold its processing's cost. Raises VideoRejectedError or InsufficientCreditsError."""
        container = sniff(data)
        digest = hashlib.sha256(data).hexdigest()
        request = Request("video_processing", "UPLOADED", title, description, {}, digest, kind="video")
        return await self._request(user_id, key, request, {"container": container, "bytes": len(data)}, data=data)

    async def cancel(self, user_id: str, media_id: str) -> Media:
        """Cancel a video while it is processed: recorded with `media.job.cancelled` in one transaction
        (the ledger releases the hold; a worker on it drops its work). Cancelling it again answers the
        same; one that has ended raises NotProcessingError."""
        async with self._pool.connection() as conn, conn.transaction():
            media = await store.media(conn, media_id, lock=True)
            if media is None or media.user_id != user_id or media.kind != "video":
                raise MediaNotFoundError(media_id)
            if media.status == Status.CANCELLED:
                return media
            if media.status != Status.PROCESSING:
                raise NotProcessingError(media)
            job = await store.job_of(conn, media_id)
            assert job is not None, "stored with its record"
            cancelled = replace(media, status=Status.CANCELLED, updated_at=datetime.now(UTC))
            await store.finish(conn, cancelled)
            event = mc.JobCancelled(job_id=job.id, user_id=user_id, operation=job.operation)
            await outbox.add(conn, Envelope.wrap(event, user_id=user_id, correlation_id=f"media:{media_id}"))
        self._relay.wake()
        return cancelled

    async def transform(self, user_id: str, source_id: str, spec: dict[str, Any], key: str) -> Media:
        """A transformed copy of one of the user's images (the source stays as it is)."""
        return await self._from_source(user_id, source_id, "image_transformation", "TRANSFORMED", spec, key)

    async def extend(self, user_id: str, source_id: str, sides: dict[str, int], key: str) -> Media:
        """A copy of one of the user's images on a bigger canvas, its new border filled from its edges."""
        return await self._from_source(user_id, source_id, "image_extension", "EXTENDED", sides, key)

    async def remove_background(self, user_id: str, source_id: str, method: str, key: str) -> Media:
        """A copy of one of the user's images with its background transparent (PNG)."""
        params = {"method": method}
        return await self._from_source(user_id, source_id, "background_removal", "BACKGROUND_REMOVED", params, key)

    async def _from_source(
        self, user_id: str, source_id: str, operation: str, kind: str, params: dict[str, Any], key: str
    ) -> Media:
        source = await self.get(user_id, source_id)
        if source.kind != "image":
            raise MediaNotFoundError(source_id)  # the image operations work on images only
        if source.file_key is None:
            raise NotReadyError(source_id)
        request = Request(operation, kind, source.title, source.description, params, source_id)
        return await self._request(user_id, key, request, {"source_id": source_id}, input_key=source.file_key)

    async def generate(self, user_id: str, params: dict[str, Any], key: str) -> Media:
        request = Request("image_generation", "GENERATED", params["prompt"][:200], None, params, "")
        return await self._request(user_id, key, request, {"prompt": params["prompt"], "seed": params["seed"]})

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
