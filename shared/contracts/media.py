"""Events on the MEDIA stream: credit-costing jobs and how they ended."""

from __future__ import annotations

from pydantic import Field

from shared.contracts.envelope import EventData


class JobRequested(EventData):
    type = "media.job.requested"
    job_id: str
    user_id: str
    operation: str
    cost: int = Field(gt=0)
    resource_type: str
    resource_id: str


class JobCompleted(EventData):
    type = "media.job.completed"
    job_id: str
    user_id: str
    operation: str
    cost: int = Field(ge=0)
    resource_id: str


class JobFailed(EventData):
    type = "media.job.failed"
    job_id: str
    user_id: str
    operation: str
    reason: str


class JobCancelled(EventData):
    type = "media.job.cancelled"
    job_id: str
    user_id: str
    operation: str
