"""Events on the MEDIA stream: credit-costing jobs and how they ended."""

from __future__ import annotations

from pydantic import Field

from shared.contracts.envelope import EventData
from shared.inputs import MediumText, ShortText


class _Job(EventData):
    """What every event of a job says: which, whose, what operation."""

    job_id: ShortText
    user_id: ShortText
    operation: ShortText
    # Whose credit pays: an organization's account when its member asked (older events: the user's own).
    account_id: ShortText | None = None


class JobRequested(_Job):
    type = "media.job.requested"
    cost: int = Field(gt=0)
    resource_type: ShortText
    resource_id: ShortText
    # How long the ledger holds the cost (the operation's worst case); absent: the ledger's default.
    hold_seconds: int | None = Field(default=None, gt=0, le=86_400)


class JobCompleted(_Job):
    type = "media.job.completed"
    cost: int = Field(ge=0)
    resource_id: ShortText


class JobFailed(_Job):
    type = "media.job.failed"
    reason: MediumText


class JobCancelled(_Job):
    type = "media.job.cancelled"


class WorkQueued(_Job):
    """A reserved job handed to the workers (the MEDIAWORK stream: media's own queue, no other reader)."""

    type = "mediawork.job"
