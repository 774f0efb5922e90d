"""The operator's door: where each read model stands and how far behind, and the replay that rebuilds them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel, Field

from services.projections import queries, store
from services.projections.api import job_view
from services.projections.deps import JetStreamDep, PoolDep, ReplayerDep
from services.projections.projection import CONSUMERS
from services.projections.schemas import ExportedJob
from shared.auth import Principal, privileged
from shared.bus import deadletters
from shared.contracts import Envelope
from shared.guard import GuardedRoute
from shared.problems import Problem, responses
from shared.scopes import Scope

# The same tag as the user's reads: the OpenAPI document stays as it was.
router = APIRouter(tags=["user"], route_class=GuardedRoute)

StatusReader = Annotated[Principal, privileged(Scope.PROJECTIONS_STATUS)]


class ReadModelStatus(BaseModel):
    consumer: str
    stream: str
    applied_position: int = Field(description="the last stream sequence applied")
    stream_position: int = Field(description="the stream's last sequence")
    lag_messages: int = Field(description="messages of this read model's subjects not yet applied")
    lag_seconds: float = Field(description="how much older the last applied message is than the stream's last")
    dead_letters: int


class ProjectionsStatus(BaseModel):
    read_models: list[ReadModelStatus]


@router.get("/api/projections/status", response_model=ProjectionsStatus, responses=responses(403))
async def status(principal: StatusReader, js: JetStreamDep, pool: PoolDep) -> ProjectionsStatus:
    """Per read model (admin or service): where it stands in its stream and how far behind it is."""
    async with pool.connection() as conn:
        applied = {row["consumer"]: row for row in await store.positions(conn)}
    parked = await deadletters.counts(js)
    models = []
    for stream, durable in CONSUMERS:
        info, consumer = await js.stream_info(stream), await js.consumer_info(stream, durable)
        position = int(applied[durable]["stream_seq"]) if durable in applied else 0
        behind = int(consumer.num_pending or 0) + int(consumer.num_ack_pending or 0)
        seconds = await _age_between(js, stream, position, int(info.state.last_seq)) if behind else 0.0
        models.append(ReadModelStatus(
            consumer=durable, stream=stream, applied_position=position, stream_position=info.state.last_seq,
            lag_messages=behind, lag_seconds=seconds, dead_letters=parked.get(durable, 0),
        ))  # fmt: skip
    return ProjectionsStatus(read_models=models)


async def _age_between(js: JetStreamContext, stream: str, first: int, last: int) -> float:
    """Seconds between the events at two stream positions (0 before the first)."""

    async def moment(seq: int) -> datetime | None:
        if seq < 1:
            return None
        try:
            return Envelope.from_bytes((await js.get_msg(stream, seq=seq)).data or b"").occurred_at
        except (NotFoundError, ValueError):
            return None

    start, end = await moment(first), await moment(last)
    return round((end - start).total_seconds(), 3) if start and end else 0.0


class UserJobs(BaseModel):
    user_id: str
    jobs: list[ExportedJob] = Field(description="newest first")


@router.get("/api/admin/users/{user_id}/jobs", response_model=UserJobs, tags=["admin"], responses=responses(403))
async def user_jobs(
    user_id: uuid.UUID,
    principal: Annotated[Principal, privileged(Scope.PROJECTIONS_READ)],
    pool: PoolDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> UserJobs:
    """A user's media jobs, newest first (admin or service): what the admin console's user panel shows."""
    async with pool.connection() as conn:
        rows = await queries.recent_jobs_of(conn, str(user_id), limit)
    return UserJobs(user_id=str(user_id), jobs=[job_view(row) for row in rows])


class ReplayStatus(BaseModel):
    state: str = Field(description="idle | rebuilding | swapping | done | failed")
    applied: int
    total: int
    started_at: datetime | None
    finished_at: datetime | None
    seconds: float | None
    error: str | None
    streams: dict[str, int]


@router.post("/api/projections/replay", response_model=ReplayStatus, status_code=202, responses=responses(403, 409))
async def replay(
    principal: Annotated[Principal, privileged(Scope.PROJECTIONS_REPLAY)], replayer: ReplayerDep
) -> ReplayStatus:
    """Rebuild every read model from sequence 1 of each stream beside the live ones, then swap them in
    atomically (admin or service). Reads go on meanwhile; GET this path for progress."""
    if replayer.running:
        raise Problem(409, "A replay is running already: GET /api/projections/replay shows how far it is.")
    return ReplayStatus(**replayer.start().public())


@router.get("/api/projections/replay", response_model=ReplayStatus, responses=responses(403))
async def replay_status(principal: StatusReader, replayer: ReplayerDep) -> ReplayStatus:
    return ReplayStatus(**replayer.progress.public())
