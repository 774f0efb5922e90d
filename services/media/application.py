"""Media's use cases. A credit-costing request stores its record and job and queues
`media.job.requested` in one transaction, then waits (bounded) for the ledger's answer: a hold, or a
refusal. The API never reads a balance to decide: it reserves."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool

from services.media import store
from services.media.domain import (
    Hold,
    IdempotencyConflictError,
    InsufficientCreditsError,
    Job,
    Media,
    MediaNotFoundError,
    Status,
)
from services.media.images import inspect
from services.media.storage import Storage
from shared import outbox
from shared.contracts import Envelope
from shared.contracts import media as mc
from shared.credits import OPERATION_COSTS
from shared.outbox import OutboxRelay

# How long a request waits for the ledger's answer before it answers 202 with the hold still pending.
ANSWER_WAIT_SECONDS = 10.0


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
        fingerprint = hashlib.sha256(repr((hashlib.sha256(data).hexdigest(), title, description)).encode()).hexdigest()
        job_id, media_id, now = str(uuid.uuid4()), str(uuid.uuid4()), datetime.now(UTC)
        operation = "image_upload"
        async with self._pool.connection() as conn, conn.transaction():
            held_fingerprint, held_job = await store.claim_key(conn, f"media:{user_id}", key, fingerprint, job_id)
            if held_fingerprint != fingerprint:
                raise IdempotencyConflictError(key)
            if held_job == job_id:
                input_key = f"incoming/{job_id}"
                await asyncio.to_thread(self.storage.put, input_key, data)
                metadata = {"format": info.format, "width": info.width, "height": info.height, "bytes": len(data)}
                media = Media(media_id, user_id, "image", "UPLOADED", title, description, Status.PROCESSING, None,
                              None, metadata, now, now)  # fmt: skip
                job = Job(job_id, media_id, user_id, operation, OPERATION_COSTS[operation], input_key, Hold.REQUESTED)
                await store.add(conn, media, job)
                requested = mc.JobRequested(
                    job_id=job_id, user_id=user_id, operation=operation, cost=job.cost, resource_type="image",
                    resource_id=media_id,
                )  # fmt: skip
                await outbox.add(conn, Envelope.wrap(requested, user_id=user_id, correlation_id=f"job:{job_id}"))
        self._relay.wake()
        return await self._answer(held_job)

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
