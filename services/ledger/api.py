"""Ledger's HTTP reads: balances and the authoritative history. Commands live in api_commands.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.ledger.answers import Answer, entry, is_entry
from services.ledger.application import Ledger
from services.ledger.unit_of_work import UnitOfWork
from shared.auth import CurrentPrincipal, ensure_may_act_for
from shared.contracts.ledger import EntryType
from shared.guard import GuardedRoute
from shared.inputs import CursorCodec
from shared.params import PageCursor
from shared.problems import MEDIA_TYPE, Problem, responses

router = APIRouter(tags=["accounts"], route_class=GuardedRoute)


def get_ledger(request: Request) -> Ledger:
    return request.app.state.ledger


def get_unit_of_work(request: Request) -> UnitOfWork:
    return request.app.state.unit


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
UnitOfWorkDep = Annotated[UnitOfWork, Depends(get_unit_of_work)]


def respond(request: Request, answer: Answer) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    if answer.status >= 400:
        body = {**answer.body, "instance": request.url.path}
        return JSONResponse(body, status_code=answer.status, headers=headers, media_type=MEDIA_TYPE)
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


class AccountPublic(BaseModel):
    user_id: str
    balance: int
    reserved: int
    available: int
    active: bool


class CanSpendPublic(BaseModel):
    user_id: str
    amount: int
    balance: int
    available: int
    can_spend: bool


class EntryPublic(BaseModel):
    """One line of the credit log: a positive amount added credits, a negative one used them."""

    id: str
    user_id: str
    version: int
    type: EntryType
    amount: int
    balance_after: int
    shortfall: int
    description: str
    metadata: dict[str, Any]
    idempotency_key: str
    created_at: datetime


class HoldPublic(BaseModel):
    """A hold on credits for a job, and what became of it."""

    id: str
    reservation_id: str
    user_id: str
    job_id: str | None
    amount: int
    balance: int
    reserved: int
    available: int
    created_at: datetime
    expires_at: datetime | None = None
    captured: int | None = None
    released: int | None = None
    reason: str | None = None


class EntriesPage(BaseModel):
    user_id: str
    entries: list[EntryPublic]
    next_cursor: str | None


# The version below which the next page starts (the first event is version 1).
ENTRIES_CURSOR: CursorCodec[int] = CursorCodec(Annotated[int, Field(ge=2, le=2**62)])


async def _account(ledger: Ledger, user_id: str) -> AccountPublic:
    account = await asyncio.to_thread(ledger.account, user_id)
    if account is None:
        raise Problem(404, f"No credit account for user {user_id}.")
    return AccountPublic(
        user_id=user_id,
        balance=account.balance,
        reserved=account.reserved,
        available=account.available,
        active=account.active,
    )


@router.get("/api/accounts/{user_id}", response_model=AccountPublic)
async def get_account(user_id: uuid.UUID, principal: CurrentPrincipal, ledger: LedgerDep) -> AccountPublic:
    ensure_may_act_for(principal, str(user_id))
    return await _account(ledger, str(user_id))


@router.get("/api/accounts/{user_id}/can-spend", response_model=CanSpendPublic)
async def can_spend(
    user_id: uuid.UUID,
    principal: CurrentPrincipal,
    ledger: LedgerDep,
    amount: Annotated[int, Query(gt=0, le=1_000_000)],
) -> CanSpendPublic:
    ensure_may_act_for(principal, str(user_id))
    account = await _account(ledger, str(user_id))
    return CanSpendPublic(
        user_id=account.user_id,
        amount=amount,
        balance=account.balance,
        available=account.available,
        can_spend=account.active and amount <= account.available,
    )


@router.get("/api/accounts/{user_id}/entries", response_model=EntriesPage, responses=responses(400))
async def list_entries(
    user_id: uuid.UUID,
    principal: CurrentPrincipal,
    ledger: LedgerDep,
    cursor: PageCursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    entry_type: Annotated[list[EntryType] | None, Query(alias="type", description="only these types")] = None,
) -> EntriesPage:
    """The authoritative credit history, newest first, read from the ledger's event store."""
    uid = str(user_id)
    ensure_may_act_for(principal, uid)
    types = {t.value for t in entry_type or ()}
    before = ENTRIES_CURSOR.decode(cursor)
    events, next_cursor = await asyncio.to_thread(
        ledger.history, uid, before=before, limit=limit, keep=lambda e: is_entry(e, types)
    )
    if cursor is None and not events and await asyncio.to_thread(ledger.account, uid) is None:
        raise Problem(404, f"No credit account for user {uid}.")
    return EntriesPage(
        user_id=uid,
        entries=[EntryPublic.model_validate(entry(e)) for e in events],
        next_cursor=None if next_cursor is None else ENTRIES_CURSOR.encode(next_cursor),
    )
