"""Media's use cases, one per command (COMMAND_HANDLERS). A credit-costing request stores its record and
job and queues `media.job.requested` in one transaction, then waits (bounded) for the ledger's answer: a
hold, or a refusal. The hold decides; the one balance read, before an upload's body is taken, only spares
reading a body that could not be paid for."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool

from services.media import store, uploads
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
    Paid,
    ProcessVideo,
    ReceivedFile,
    RecordHold,
    RemoveBackground,
    Status,
    Transform,
    Upload,
    UploadsBusyError,
)
from services.media.images import ImageInfo, check_extension, check_transform, inspect_file
from services.media.storage import INCOMING, Storage, drop_upload, incoming_key
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
# How long an upload waits for room to be received in this process (MEDIA_MAX_UPLOADS) before it is a 503.
UPLOAD_WAIT_SECONDS = 10.0
# An upload is recorded with its job the moment it is whole; one untouched this long that no job being made
# reads was left by a process that died in between (or by a half-written body): it is removed.
ORPHAN_AGE_SECONDS = 3600.0
SWEEP_EVERY_SECONDS = 600.0
R = TypeVar("R")
T = TypeVar("T")

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Credit:
    balance: int
    available: int  # the balance less what running jobs hold


# The ledger's word on a user's credit now; None when it cannot be had (the hold then decides alone).
Balances = Callable[[str], Awaitable[Credit | None]]
# A received upload and the text fields sent beside it.
Received = tuple[ReceivedFile, dict[str, str]]
# Reads an upload's body (its chunks, its Content-Type, a byte limit) into storage.
Receive = Callable[[AsyncIterator[bytes], str, int], Awaitable[Received]]


async def _unknown(_user_id: str) -> Credit | None:
    return None


class MediaLibrary:
    def __init__(
        self, pool: AsyncConnectionPool, relay: OutboxRelay, storage: Storage, *,
        balances: Balances = _unknown, max_uploads: int = 4,
    ) -> None:  # fmt: skip
        self._pool = pool
        self._relay = relay
        self.storage = storage
        self._balances = balances
        # Uploads this process writes at once: each holds a connection and a thread's turn while it streams.
        self._uploads = asyncio.Semaphore(max_uploads)
        self._max_uploads = max_uploads

    async def handle(self, command: Command[R]) -> R:
        answer: R = await COMMAND_HANDLERS[type(command)](self, command)
        return answer

    @asynccontextmanager
    async def receiving(self, user_id: str, operation: str, account_id: str | None = None) -> AsyncIterator[Receive]:
        """Room to receive one upload for `operation`, before a byte of its body is read: UploadsBusyError if
        this process is writing as many as it may for UPLOAD_WAIT_SECONDS, InsufficientCreditsError if the
        paying account's available credit (the ledger's word, asked now: the user's own, or `account_id`, their
        organization's) is short of its cost. Yields what reads the
        body into storage."""
        try:
            # A short wait smooths a burst (a browser sending five photos); a longer one would only queue.
            await asyncio.wait_for(self._uploads.acquire(), UPLOAD_WAIT_SECONDS)
        except TimeoutError:
            raise UploadsBusyError(self._max_uploads) from None
        try:
            cost = OPERATION_COSTS[operation]
            account = await self._balances(account_id or user_id)
            if account is not None and account.available < cost:
                refusal = {"account": "org" if account_id else "user", "reason": "credits"}
                raise InsufficientCreditsError(Job("", "", user_id, operation, cost, "", Hold.REJECTED,
                                                   balance=account.balance, available=account.available,
                                                   account_id=account_id, refusal=refusal))  # fmt: skip

            async def receive(body: AsyncIterator[bytes], content_type: str, limit: int) -> Received:
                return await uploads.receive(body, content_type, self.storage, incoming_key(str(uuid.uuid4())), limit)

            yield receive
        finally:
            self._uploads.release()

    async def _upload(self, c: Upload) -> Media:
        """Check the received file and ask the ledger to hold the upload's cost; the record once it is held.
        Raises ImageRejectedError or InsufficientCreditsError; either way nothing of the request is kept."""
        info = await self._checked(c.file, lambda: self._inspect(c.file))
        request = Request("image_upload", "UPLOADED", c.title, c.description, {}, c.file.sha256)
        metadata = {"format": info.format, "width": info.width, "height": info.height, **_as_received(c.file)}
        return await self._request(c, request, metadata, received=c.file)

    async def _process_video(self, c: ProcessVideo) -> Media:
        """Take a received video (only its signature is checked here: decoding is the worker's) and ask the
        ledger to hold its processing's cost. Raises VideoRejectedError or InsufficientCreditsError."""
        container = await self._checked(c.file, lambda: sniff(c.file.head, c.file.size))
        request = Request("video_processing", "UPLOADED", c.title, c.description, {}, c.file.sha256, kind="video")
        metadata = {"container": container, **_as_received(c.file)}
        return await self._request(c, request, metadata, received=c.file)

    async def discard(self, file: ReceivedFile) -> None:
        """A received upload its request will not use (its fields were refused)."""
        await drop_upload(self.storage, file.key)

    def _inspect(self, file: ReceivedFile) -> ImageInfo:
        with self.storage.open(file.key) as stored:
            return inspect_file(stored, file.size)

    async def _checked(self, file: ReceivedFile, check: Callable[[], T]) -> T:
        """`check` of a received file, off the loop; a file it refuses is removed."""
        try:
            return await asyncio.to_thread(check)
        except BaseException:
            await drop_upload(self.storage, file.key)
            raise

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
            event = mc.JobCancelled(
                job_id=job.id, user_id=c.user_id, operation=job.operation, account_id=job.account_id
            )
            await outbox.add(conn, Envelope.wrap(event, user_id=c.user_id, correlation_id=f"media:{c.video_id}"))
        self._relay.wake()
        return cancelled

    async def _transform(self, c: Transform) -> Media:
        """A transformed copy of one of the user's images; TooManyPixelsError if a step of it would be too large."""
        return await self._from_source(
            c, "image_transformation", "TRANSFORMED", c.spec, lambda w, h: check_transform(w, h, c.spec)
        )

    async def _extend(self, c: Extend) -> Media:
        """A copy of one of the user's images on a bigger canvas, its new border filled from its edges."""
        sides = {"left": c.left, "right": c.right, "top": c.top, "bottom": c.bottom}
        return await self._from_source(
            c, "image_extension", "EXTENDED", sides, lambda w, h: check_extension(w, h, sides)
        )

    async def _remove_background(self, c: RemoveBackground) -> Media:
        """A copy of one of the user's images with its background transparent (PNG)."""
        return await self._from_source(c, "background_removal", "BACKGROUND_REMOVED", {"method": c.method})

    async def _from_source(
        self, c: OnImage, operation: str, kind: str, params: dict[str, Any],
        fits: Callable[[int, int], None] = lambda w, h: None,
    ) -> Media:  # fmt: skip
        """A paid operation on one of the user's images; `fits` refuses (raises) a result too large for
        the source's size, before anything is stored or held."""
        source = await self.get(c.user_id, c.image_id)
        if source.kind != "image":
            raise MediaNotFoundError(c.image_id)  # the image operations work on images only
        if source.file_key is None:
            raise NotReadyError(c.image_id)
        if "width" in source.metadata and "height" in source.metadata:  # the made file's, upright
            fits(int(source.metadata["width"]), int(source.metadata["height"]))
        request = Request(operation, kind, source.title, source.description, params, c.image_id)
        return await self._request(c, request, {"source_id": c.image_id}, input_key=source.file_key)

    async def _generate(self, c: Generate) -> Media:
        params = {"prompt": c.prompt, "seed": c.seed, "width": c.width, "height": c.height}
        request = Request("image_generation", "GENERATED", c.prompt[:200], None, params, "")
        return await self._request(c, request, {"prompt": c.prompt, "seed": c.seed})

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
            await store.set_hold(conn, job.id, c.hold, c.balance, c.available, c.expires_at, c.refusal)
            if c.hold is Hold.RESERVED:
                work = mc.WorkQueued(job_id=job.id, user_id=job.user_id, operation=job.operation,
                                     account_id=job.account_id)  # fmt: skip
                queued = Envelope.wrap(work, user_id=job.user_id, event_id=derive_id("mediawork", job.id))
                await outbox.add(conn, queued)
            else:
                await store.remove(conn, job.media_id)
                refused_input = job.input_key
        if refused_input is not None:
            await drop_upload(self.storage, refused_input)
        self._relay.wake()

    async def _request(
        self, asked: Paid, request: Request, metadata: dict[str, Any], *, received: ReceivedFile | None = None,
        input_key: str = "",
    ) -> Media:  # fmt: skip
        """Store the record, its job and `media.job.requested` in one transaction (naming the received file,
        already in storage, if any), then wait for the ledger's answer. A retry under `key` waits for the
        same job's answer, and its own copy of the file goes; so does the file of a request not recorded."""
        user_id, key = asked.user_id, asked.key
        meaning = fingerprint(dataclasses.asdict(request))
        job_id, media_id, now = str(uuid.uuid4()), str(uuid.uuid4()), datetime.now(UTC)
        media = Media(media_id, user_id, request.kind, request.type, request.title, request.description,
                      Status.PROCESSING, None, None, metadata, now, now)  # fmt: skip
        cost = OPERATION_COSTS[request.operation]
        job = Job(job_id, media_id, user_id, request.operation, cost, received.key if received else input_key,
                  Hold.REQUESTED, params=request.params, account_id=asked.account_id)  # fmt: skip
        try:
            async with self._pool.connection() as conn, conn.transaction():
                held_job = await idempotency.claim(conn, f"media:{user_id}", key, meaning, job_id)
                if held_job == job_id:
                    await store.add(conn, media, job)
                    requested = mc.JobRequested(
                        job_id=job_id, user_id=user_id, operation=request.operation, cost=cost,
                        resource_type=request.kind, resource_id=media_id, hold_seconds=HOLD_SECONDS[request.operation],
                        account_id=asked.account_id,
                    )  # fmt: skip
                    await outbox.add(conn, Envelope.wrap(requested, user_id=user_id, correlation_id=f"job:{job_id}"))
        except BaseException:
            if received is not None:
                await drop_upload(self.storage, received.key)
            raise
        self._relay.wake()
        if held_job != job_id:
            if received is not None:
                await drop_upload(self.storage, received.key)
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

    async def sweep_incoming(self, older_than: float = ORPHAN_AGE_SECONDS) -> list[str]:
        """Remove the uploads no job will read (see ORPHAN_AGE_SECONDS); answers their keys."""
        stale = await asyncio.to_thread(lambda: list(self.storage.untouched(INCOMING, older_than)))
        if not stale:
            return []
        async with self._pool.connection() as conn:
            used = await store.in_use(conn, stale)
        orphans = [key for key in stale if key not in used]
        for key in orphans:
            await asyncio.to_thread(self.storage.delete, key)
        return orphans

    async def sweeping(self) -> None:
        while True:
            if orphans := await self.sweep_incoming():
                log.warning("removed %d uploads no job reads: %s", len(orphans), ", ".join(orphans[:10]))
            await asyncio.sleep(SWEEP_EVERY_SECONDS)

    async def forget(self, user_id: str) -> None:
        """A user identity erased: their records, jobs (prompts, titles, descriptions) and files go. What the
        jobs cost stays in the ledger; a job a worker is on finds its record gone and keeps nothing."""
        async with self._pool.connection() as conn, conn.transaction():
            inputs = await store.forget(conn, user_id)
        await asyncio.to_thread(self.storage.remove_tree, user_id)  # every made file is under the user's folder
        for key in inputs:
            await drop_upload(self.storage, key)
        log.info("forgot user %s: %d jobs, their files", user_id, len(inputs))

    async def get(self, user_id: str, media_id: str) -> Media:
        async with self._pool.connection() as conn:
            media = await store.media(conn, media_id)
        if media is None or media.user_id != user_id:
            raise MediaNotFoundError(media_id)
        return media

    async def page(self, user_id: str, kind: str, after: tuple[datetime, str] | None, limit: int) -> list[Media]:
        async with self._pool.connection() as conn:
            return await store.page(conn, user_id, kind, after, limit)


def _as_received(file: ReceivedFile) -> dict[str, Any]:
    """What a record says of the upload it is made from (`bytes` becomes the made file's once it is made;
    the upload's hash stays, for its client to check it arrived as sent)."""
    return {"bytes": file.size, "upload_sha256": file.sha256}


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
