"""Ledger's HTTP commands. Each takes an Idempotency-Key: a retry gets the first answer (status and
body, a 402 included), the same key with a different request gets 409."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.ledger import commands
from services.ledger.answers import answer
from services.ledger.api import DispatcherDep, respond
from services.ledger.application import Command, ConcurrencyError, Result
from services.ledger.dispatch import Dispatcher
from shared.auth import CurrentPrincipal, Privileged, ensure_may_act_for
from shared.problems import Problem

router = APIRouter(tags=["accounts"])

Amount = Annotated[int, Field(strict=True, gt=0, le=1_000_000)]
KeyHeader = Annotated[str | None, Header(alias="Idempotency-Key")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DebitIn(Body):
    amount: Amount
    description: str = Field("", max_length=500)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, default=str)) > 4096:
            raise ValueError("metadata must be at most 4096 bytes of JSON")
        return value


class GrantIn(DebitIn):
    type: Literal["PURCHASE", "BONUS", "REFUND", "ADMIN_ADJUSTMENT"]


class ReservationIn(Body):
    amount: Amount
    job_id: str | None = Field(None, max_length=200)
    ttl_seconds: int | None = Field(None, ge=1, le=86_400)


class CaptureIn(Body):
    amount: int | None = Field(None, strict=True, ge=0, description="omit to capture the whole hold")
    description: str = Field("", max_length=500)


class ReleaseIn(Body):
    reason: str = Field("released", max_length=200)


class AdjustmentIn(Body):
    amount: Annotated[int, Field(strict=True, ge=-1_000_000, le=1_000_000)]
    reason: str = Field(min_length=1, max_length=500)

    @field_validator("amount")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("an adjustment of 0 changes nothing")
        return value


def _key(key: str | None) -> str:
    if not key or not key.strip():
        raise Problem(400, "Bad Request", "This command needs an Idempotency-Key header.")
    if len(key) > 200:
        raise Problem(400, "Bad Request", "The Idempotency-Key header is longer than 200 characters.")
    return key.strip()


def _request_id(request: Request) -> str:
    return request.headers.get("x-request-id") or f"request:{uuid.uuid4()}"


async def _run(request: Request, dispatcher: Dispatcher, command: Command) -> JSONResponse:
    try:
        result: Result | Exception = await dispatcher.submit(command)
    except ConcurrencyError as error:
        result = error
    return respond(request, answer(result))


@router.post("/api/accounts/{user_id}/debits", status_code=201)
async def debit(
    user_id: uuid.UUID,
    body: DebitIn,
    principal: CurrentPrincipal,
    d: DispatcherDep,
    request: Request,
    key: KeyHeader = None,
) -> JSONResponse:
    ensure_may_act_for(principal, str(user_id))
    cmd = commands.debit(
        str(user_id), **body.model_dump(), key=_key(key), request_id=_request_id(request), entry_type="USAGE"
    )
    return await _run(request, d, cmd)


@router.post("/api/accounts/{user_id}/grants", status_code=201)
async def grant(
    user_id: uuid.UUID, body: GrantIn, _: Privileged, d: DispatcherDep, request: Request, key: KeyHeader = None
) -> JSONResponse:
    fields = body.model_dump()
    cmd = commands.grant(
        str(user_id), entry_type=fields.pop("type"), **fields, key=_key(key), request_id=_request_id(request)
    )
    return await _run(request, d, cmd)


@router.post("/api/accounts/{user_id}/reservations", status_code=201)
async def reserve(
    user_id: uuid.UUID,
    body: ReservationIn,
    principal: CurrentPrincipal,
    d: DispatcherDep,
    request: Request,
    key: KeyHeader = None,
) -> JSONResponse:
    ensure_may_act_for(principal, str(user_id))
    ttl = body.ttl_seconds or request.app.state.settings.reservation_ttl_seconds
    cmd = commands.reserve(
        str(user_id),
        amount=body.amount,
        job_id=body.job_id,
        ttl_seconds=ttl,
        now=datetime.now(UTC),
        key=_key(key),
        request_id=_request_id(request),
    )
    return await _run(request, d, cmd)


@router.post("/api/accounts/{user_id}/reservations/{reservation_id}/capture")
async def capture(
    user_id: uuid.UUID,
    reservation_id: uuid.UUID,
    principal: CurrentPrincipal,
    d: DispatcherDep,
    request: Request,
    key: KeyHeader = None,
    body: CaptureIn | None = None,
) -> JSONResponse:
    ensure_may_act_for(principal, str(user_id))
    body = body or CaptureIn()
    cmd = commands.capture(
        str(user_id),
        reservation_id=str(reservation_id),
        amount=body.amount,
        description=body.description,
        key=_key(key),
        request_id=_request_id(request),
    )
    return await _run(request, d, cmd)


@router.post("/api/accounts/{user_id}/reservations/{reservation_id}/release")
async def release(
    user_id: uuid.UUID,
    reservation_id: uuid.UUID,
    principal: CurrentPrincipal,
    d: DispatcherDep,
    request: Request,
    key: KeyHeader = None,
    body: ReleaseIn | None = None,
) -> JSONResponse:
    ensure_may_act_for(principal, str(user_id))
    body = body or ReleaseIn()
    cmd = commands.release(
        str(user_id),
        reservation_id=str(reservation_id),
        reason=body.reason,
        key=_key(key),
        request_id=_request_id(request),
    )
    return await _run(request, d, cmd)


@router.post("/api/admin/accounts/{user_id}/adjustments", status_code=201, tags=["admin"])
async def adjust(
    user_id: uuid.UUID, body: AdjustmentIn, admin: Privileged, d: DispatcherDep, request: Request, key: KeyHeader = None
) -> JSONResponse:
    cmd = commands.adjust(
        str(user_id),
        amount=body.amount,
        reason=body.reason,
        admin_id=admin.user_id,
        key=_key(key),
        request_id=_request_id(request),
    )
    return await _run(request, d, cmd)
