"""Media records and the jobs that make them; no framework, no SQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

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

    def hold_lasts(self, now: datetime) -> bool:
        """Whether an outcome recorded now still finds its hold: the completion has to reach the ledger
        before the hold expires, or the work would be free (or charged without a hold)."""
        return self.hold_expires_at is None or now + SETTLE_MARGIN < self.hold_expires_at


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


class MediaNotFoundError(LookupError):
    pass


class NotReadyError(Exception):
    """The source image of an operation is not (yet) made."""
