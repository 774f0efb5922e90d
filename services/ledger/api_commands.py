"""Ledger's HTTP commands. Each takes an Idempotency-Key: a retry gets the first answer (status and
body, a 402 included), the same key with a different request gets 409."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from services.ledger import commands
from services.ledger.answers import answer
from services.ledger.api import EntryPublic, HoldPublic, UnitOfWorkDep, respond
from services.ledger.application import Command, ConcurrencyError, Result
from services.ledger.unit_of_work import UnitOfWork
from shared.auth import CurrentPrincipal, Privileged, ensure_may_act_for
from shared.guard import GuardedRoute
from shared.inputs import TEXT_PATTERN, JsonObject, MediumText, ShortText, Whole
from shared.params import IdempotencyKey, RequestId
from shared.problems import responses

router = APIRouter(tags=["accounts"], route_class=GuardedRoute)

Amount = Annotated[int, Field(strict=True, gt=0, le=1_000_000), Whole]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=TEXT_PATTERN)]
# Every command may be refused for want of credits (402) or for a key reused with another request (409).
ENTRY = {"response_model": EntryPublic, "responses": responses(402, 409)}
HOLD = {"response_model": HoldPublic, "responses": responses(402, 409)}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DebitIn(Body):
    amount: Amount
    description: MediumText = ""
    metadata: JsonObject = Field(default_factory=dict, description="free-form JSON: at most 16 levels and 4 KB")


class GrantIn(DebitIn):
    type: Literal["PURCHASE", "BONUS", "REFUND", "ADMIN_ADJUSTMENT"]


class ReservationIn(Body):
    amount: Amount
    job_id: ShortText | None = None
    ttl_seconds: Annotated[int, Field(strict=True, ge=1, le=86_400), Whole] | None = None


class CaptureIn(Body):
    amount: Annotated[int, Field(strict=True, ge=0, le=1_000_000), Whole] | None = Field(
        None, description="omit to capture the whole hold"
    )
    description: MediumText = ""


class ReleaseIn(Body):
    reason: ShortText = "released"


class AdjustmentIn(Body):
    amount: Annotated[
        int, Field(strict=True, ge=-1_000_000, le=1_000_000, json_schema_extra={"not": {"const": 0}}), Whole
    ]
    reason: Reason

    @field_validator("amount")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("an adjustment of 0 changes nothing")
        return value


async def _run(request: Request, unit: UnitOfWork, command: Command) -> JSONResponse:
    try:
        result: Result | Exception = await unit.submit(command)
    except ConcurrencyError as error:
        result = error
    return respond(request, answer(result))


@router.post("/api/accounts/{user_id}/debits", status_code=201, **ENTRY)
async def debit(
    user_id: uuid.UUID,
    body: DebitIn,
    principal: CurrentPrincipal,
    d: UnitOfWorkDep,
    request: Request,
    key: IdempotencyKey,
    request_id: RequestId,
) -> JSONResponse:
    ensure_may_act_for(principal, str(user_id))
    cmd = commands.debit(str(user_id), **body.model_dump(), key=key, request_id=request_id, entry_type="USAGE")
    return await _run(request, d, cmd)


@router.post("/api/accounts/{user_id}/grants", status_code=201, **ENTRY)
async def grant(
    user_id: uuid.UUID,
    body: GrantIn,
    _: Privileged,
    d: UnitOfWorkDep,
    request: Request,
    key: IdempotencyKey,
    request_id: RequestId,
) -> JSONResponse:
    fields = body.model_dump()
    cmd = commands.grant(str(user_id), entry_type=fields.pop("type"), **fields, key=key, request_id=request_id)
    return await _run(request, d, cmd)


@router.post("/api/accounts/{user_id}/reservations", status_code=201, **HOLD)
async def reserve(
    user_id: uuid.UUID,
    body: ReservationIn,
    principal: CurrentPrincipal,
    d: UnitOfWorkDep,
    request: Request,
    key: IdempotencyKey,
    request_id: RequestId,
) -> JSONResponse:
    ensure_may_act_for(principal, str(user_id))
    ttl = body.ttl_seconds or request.app.state.settings.reservation_ttl_seconds
    cmd = commands.reserve(
        str(user_id),
        amount=body.amount,
        job_id=body.job_id,
        ttl_seconds=ttl,
        now=datetime.now(UTC),
        key=key,
        request_id=request_id,
    )
    return await _run(request, d, cmd)


@router.post("/api/accounts/{user_id}/reservations/{reservation_id}/capture", **HOLD)
async def capture(
    user_id: uuid.UUID,
    reservation_id: uuid.UUID,
    principal: CurrentPrincipal,
    d: UnitOfWorkDep,
    request: Request,
    key: IdempotencyKey,
    request_id: RequestId,
    body: CaptureIn | None = None,
) -> JSONResponse:
    ensure_may_act_for(principal, str(user_id))
    body = body or CaptureIn()
    cmd = commands.capture(
        str(user_id),
        reservation_id=str(reservation_id),
        amount=body.amount,
        description=body.description,
        key=key,
        request_id=request_id,
    )
    return await _run(request, d, cmd)


@router.post("/api/accounts/{user_id}/reservations/{reservation_id}/release", **HOLD)
async def release(
    user_id: uuid.UUID,
    reservation_id: uuid.UUID,
    principal: CurrentPrincipal,
    d: UnitOfWorkDep,
    request: Request,
    key: IdempotencyKey,
    request_id: RequestId,
    body: ReleaseIn | None = None,
) -> JSONResponse:
    ensure_may_act_for(principal, str(user_id))
    body = body or ReleaseIn()
    cmd = commands.release(
        str(user_id),
        reservation_id=str(reservation_id),
        reason=body.reason,
        key=key,
        request_id=request_id,
    )
    return await _run(request, d, cmd)


@router.post("/api/admin/accounts/{user_id}/adjustments", status_code=201, tags=["admin"], **ENTRY)
async def adjust(
    user_id: uuid.UUID,
    body: AdjustmentIn,
    admin: Privileged,
    d: UnitOfWorkDep,
    request: Request,
    key: IdempotencyKey,
    request_id: RequestId,
) -> JSONResponse:
    cmd = commands.adjust(
        str(user_id),
        amount=body.amount,
        reason=body.reason,
        admin_id=admin.user_id,
        key=key,
        request_id=request_id,
    )
    return await _run(request, d, cmd)
