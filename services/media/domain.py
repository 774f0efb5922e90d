"""Media records, the jobs that make them and the commands that ask for them; no framework, no SQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

# Asked while an operation works: has its job been cancelled? Quick operations (images) never ask.
Cancelled = Callable[[], bool]

# Time for a recorded outcome to travel outbox → stream → ledger, with room to spare.
SETTLE_MARGIN = timedelta(seconds=15)


class Status(StrEnum):
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class Hold(StrEnum):
    """Where a job's credit hold stands, as the ledger answered."""

    REQUESTED = "REQUESTED"
    RESERVED = "RESERVED"
    REJECTED = "REJECTED"


@dataclass(frozen=True)
class Media:
    id: str
    user_id: str
    kind: str  # image | video
    type: str  # UPLOADED, GENERATED, TRANSFORMED, BACKGROUND_REMOVED, EXTENDED (images); UPLOADED (videos)
    title: str | None
    description: str | None
    status: Status | str
    file_key: str | None
    thumbnail_key: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Job:
    id: str
    media_id: str
    user_id: str
    operation: str
    cost: int
    input_key: str
    hold: Hold
    balance: int | None = None  # what the ledger said when it refused the hold
    available: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the operation's request (a transform's spec)
    hold_expires_at: datetime | None = None  # when the ledger lets the hold go unsettled
    account_id: str | None = None  # an organization's account that pays (None: the user's own)
    refusal: dict[str, Any] | None = None  # why the ledger refused the hold: whose credit, or the member's limit

    def hold_lasts(self, now: datetime) -> bool:
        """Whether an outcome recorded now still finds its hold: the completion has to reach the ledger
        before the hold expires, or the work would be free (or charged without a hold)."""
        return self.hold_expires_at is None or now + SETTLE_MARGIN < self.hold_expires_at


# -- commands: typed data, each run by its use case in application.COMMAND_HANDLERS -------------------

R = TypeVar("R", covariant=True)


@dataclass(frozen=True, kw_only=True)
class Command(Generic[R]):
    """What media is asked to do; R is what handling it answers (MediaLibrary.handle returns an R)."""


@dataclass(frozen=True, kw_only=True)
class Paid(Command[Media]):
    """A credit-costing request: its cost is held before anything is made. A retry under the same key
    (the client's Idempotency-Key) answers the first one's record; the key asking something else is a 409."""

    user_id: str
    key: str
    account_id: str | None = None  # the organization's account its member spends (None: their own)


@dataclass(frozen=True)
class ReceivedFile:
    """An upload as it was received, already in storage under `key` (until its job has an outcome)."""

    key: str
    size: int
    sha256: str
    head: bytes  # its first bytes, for a signature check


@dataclass(frozen=True, kw_only=True)
class WithFile(Paid):
    file: ReceivedFile  # checked before anything of the request is recorded
    title: str | None = None
    description: str | None = None


@dataclass(frozen=True, kw_only=True)
class Upload(WithFile):
    """An image file to keep, with its thumbnail."""


@dataclass(frozen=True, kw_only=True)
class ProcessVideo(WithFile):
    """A video file to transcode to H.264 MP4, with its thumbnail."""


@dataclass(frozen=True, kw_only=True)
class OnImage(Paid):
    image_id: str  # one of the user's images: the new record is a copy, the source stays as it is


@dataclass(frozen=True, kw_only=True)
class Transform(OnImage):
    spec: dict[str, Any]  # any of crop, resize, rotate, flip, format, quality (checked at the door)


@dataclass(frozen=True, kw_only=True)
class RemoveBackground(OnImage):
    method: str  # a segmenter's name (services/media/background.py)


@dataclass(frozen=True, kw_only=True)
class Extend(OnImage):
    """Pixels of new canvas on each side."""

    left: int
    right: int
    top: int
    bottom: int


@dataclass(frozen=True, kw_only=True)
class Generate(Paid):
    prompt: str
    seed: int
    width: int
    height: int


@dataclass(frozen=True, kw_only=True)
class CancelVideo(Command[Media]):
    user_id: str
    video_id: str


@dataclass(frozen=True, kw_only=True)
class RecordHold(Command[None]):
    """The ledger's answer for a job's hold: RESERVED (the job goes to the workers) or REJECTED (nothing of
    the request is kept). Applied once per answer: `answer_id` goes into `consumer`'s inbox with it."""

    job_id: str
    hold: Hold
    balance: int | None = None  # the ledger's figures when it refused
    available: int | None = None
    refusal: dict[str, Any] | None = None  # and why: whose credit was short, or the member's limit
    expires_at: datetime | None = None  # when a granted hold lapses unsettled
    consumer: str
    answer_id: str


# -- errors ----------------------------------------------------------------------------------------


class InsufficientCreditsError(Exception):
    def __init__(self, job: Job) -> None:
        super().__init__(f"{job.cost} credits asked, {job.available} available")
        self.job = job


class UnusableInputError(ValueError):
    """The input is not something this operation can take (a 4xx at the door; a failed job, released,
    when only the worker finds out)."""


class JobCancelledError(Exception):
    """The job was cancelled while it was processed: its work is dropped."""


class NotProcessingError(Exception):
    """The job has ended already (made, failed or cancelled): there is nothing left to cancel."""

    def __init__(self, media: Media) -> None:
        super().__init__(f"{media.id} is {media.status}")
        self.media = media


class UploadsBusyError(Exception):
    """This process is writing as many uploads as it may: a 503 at once, the body unread."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} uploads are being received here already")


class MediaNotFoundError(LookupError):
    pass


class NotReadyError(Exception):
    """The source image of an operation is not (yet) made."""
