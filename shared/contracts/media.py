"""Events on the MEDIA stream: credit-costing jobs and how they ended."""

from __future__ import annotations

from pydantic import Field

from shared.contracts.envelope import EventData
from shared.inputs import MediumText, ShortText


class JobRequested(EventData):
    type = "media.job.requested"
    job_id: ShortText
    user_id: ShortText
    operation: ShortText
    cost: int = Field(gt=0)
    resource_type: ShortText
    resource_id: ShortText
    # How long the ledger holds the cost (the operation's worst case); absent: the ledger's default.
    hold_seconds: int | None = Field(default=None, gt=0, le=86_400)


class JobCompleted(EventData):
    type = "media.job.completed"
    job_id: ShortText
    user_id: ShortText
    operation: ShortText
    cost: int = Field(ge=0)
    resource_id: ShortText


class JobFailed(EventData):
    type = "media.job.failed"
    job_id: ShortText
    user_id: ShortText
    operation: ShortText
    reason: MediumText


class JobCancelled(EventData):
    type = "media.job.cancelled"
    job_id: ShortText
    user_id: ShortText
    operation: ShortText


class WorkQueued(EventData):
    """A reserved job handed to the workers (the MEDIAWORK stream: media's own queue, no other reader)."""

    type = "mediawork.job"
    job_id: ShortText
    user_id: ShortText
    operation: ShortText
