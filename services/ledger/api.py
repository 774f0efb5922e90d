"""The ledger's HTTP API: balances and the authoritative history; the credit commands.

Every command takes an Idempotency-Key: a retry gets the first answer (status and body, a 402
included), the same key with a different request gets 409."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from services.ledger.answers import Answer, answer, entry, is_entry
from services.ledger.application import ConcurrencyError, Ledger, Result
from services.ledger.commands import Command, SetMemberLimit, SetUsageCap, client_key
from services.ledger.operations import Asked, command
from services.ledger.schemas import (
    AccountPublic,
    AdjustmentIn,
    Body,
    CanSpendPublic,
    CaptureIn,
    DebitIn,
    EntriesPage,
    EntryPublic,
    GrantIn,
    HoldPublic,
    LotPublic,
    MemberLimitIn,
    MemberLimitPublic,
    ReleaseIn,
    ReservationIn,
    UsageCapIn,
    UsageCapPublic,
)
from services.ledger.unit_of_work import UnitOfWork
from services.ledger.values import month_of
from shared import clock
from shared.auth import (
    CurrentPrincipal,
    Principal,
    ensure_org_admin,
    member_acting_for,
    privileged,
    user_id_for,
)
from shared.contracts.ledger import EntryType
from shared.guard import GuardedRoute
from shared.inputs import CursorCodec
from shared.limits import rate_limited
from shared.params import IdempotencyKey, PageCursor, RequestId
from shared.problems import MEDIA_TYPE, Problem, responses
from shared.scopes import Scope

router = APIRouter(tags=["accounts"], route_class=GuardedRoute)
CLERK_USER_ID = r"^user_[A-Za-z0-9]{1,100}$"


async def get_ledger(request: Request) -> Ledger:
    return request.app.state.ledger


async def get_unit_of_work(request: Request) -> UnitOfWork:
    return request.app.state.unit


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
UnitOfWorkDep = Annotated[UnitOfWork, Depends(get_unit_of_work)]


def respond(request: Request, answer: Answer) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    if answer.status >= 400:
        body = {**answer.body, "instance": request.url.path}
        return JSONResponse(body, status_code=answer.status, headers=headers, media_type=MEDIA_TYPE)
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


# Any command may be refused for want of credits (402) or for a key reused with another request (409).
REFUSALS = responses(402, 409, 429)
# The version below which the next page starts (the first event is version 1).
ENTRIES_CURSOR: CursorCodec[int] = CursorCodec(Annotated[int, Field(ge=2, le=2**62)])


async def _account(ledger: Ledger, user_id: str) -> AccountPublic:
    account = await asyncio.to_thread(ledger.account, user_id)
    if account is None:
        raise Problem(404, f"No credit account for user {user_id}.")
    ordered = sorted(account.lots.items(), key=lambda item: item[1].order(item[0]))
    lots = [
        LotPublic(id=i, amount=lot.amount, remaining=lot.remaining, held=account.held(i), expires_at=lot.expires_at)
        for i, lot in ordered
    ]
    return AccountPublic(
        user_id=user_id,
        balance=account.balance,
        reserved=account.reserved,
        available=account.available,
        active=account.active,
        lots=lots,
        recharge_threshold=account.recharge_threshold,
    )


@router.get("/api/accounts/{user_id}", response_model=AccountPublic)
async def get_account(user_id: uuid.UUID, principal: CurrentPrincipal, ledger: LedgerDep) -> AccountPublic:
    """Your account, or your active organization's."""
    member_acting_for(principal, str(user_id), Scope.LEDGER_READ)
    return await _account(ledger, str(user_id))


@router.get("/api/accounts/{user_id}/can-spend", response_model=CanSpendPublic)
async def can_spend(
    user_id: uuid.UUID,
    principal: CurrentPrincipal,
    ledger: LedgerDep,
    amount: Annotated[int, Query(gt=0, le=1_000_000)],
) -> CanSpendPublic:
    member_acting_for(principal, str(user_id), Scope.LEDGER_READ)
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
    """The authoritative credit history, newest first, read from the ledger's event store. An organization's
    (which names the member of each entry) is for its admins."""
    uid = str(user_id)
    if member_acting_for(principal, uid, Scope.LEDGER_READ) is not None:
        ensure_org_admin(principal)
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


@dataclass(frozen=True)
class Door:
    """What every command route has besides its body: who asks (their token), under which key, in which
    request, and the unit of work that runs the command."""

    principal: Principal
    key: str
    request_id: str | None
    request: Request
    unit: UnitOfWork

    async def run(self, operation: str, user_id: uuid.UUID, body: Body, **asked: Any) -> JSONResponse:
        ttl = self.request.app.state.settings.reservation_ttl_seconds
        to_run = command(operation, body, Asked(str(user_id), self.key, self.request_id, ttl_seconds=ttl, **asked))
        return await self.submit(to_run)

    async def submit(self, to_run: Command) -> JSONResponse:
        try:
            result: Result | Exception = await self.unit.submit(to_run)
        except ConcurrencyError as error:
            result = error
        return respond(self.request, answer(result))


async def door(
    principal: CurrentPrincipal,
    key: IdempotencyKey,
    request_id: RequestId,
    request: Request,
    unit: UnitOfWorkDep,
    _: Annotated[None, rate_limited("ledger-commands")],
) -> Door:
    return Door(principal, key, request_id, request, unit)


DoorDep = Annotated[Door, Depends(door)]


@router.post("/api/accounts/{user_id}/debits", status_code=201, response_model=EntryPublic, responses=REFUSALS)
async def debit(user_id: uuid.UUID, body: DebitIn, at: DoorDep) -> JSONResponse:
    """Spend credits of your account, or (with a token active in an organization) of the organization's, within
    your monthly limit there; a 402 says whose credit was short (`account`) and whether it was your `limit`."""
    member = member_acting_for(at.principal, str(user_id), Scope.LEDGER_DEBIT)
    return await at.run("debit", user_id, body, member_id=member)


@router.post("/api/accounts/{user_id}/grants", status_code=201, response_model=EntryPublic, responses=REFUSALS)
async def grant(
    user_id: uuid.UUID, body: GrantIn, _: Annotated[Principal, privileged(Scope.LEDGER_GRANT)], at: DoorDep
) -> JSONResponse:
    return await at.run("grant", user_id, body)


@router.post("/api/accounts/{user_id}/reservations", status_code=201, response_model=HoldPublic, responses=REFUSALS)
async def reserve(user_id: uuid.UUID, body: ReservationIn, at: DoorDep) -> JSONResponse:
    """Hold credits of your account or your organization's (as a debit: a member's hold counts against their limit)."""
    member = member_acting_for(at.principal, str(user_id), Scope.LEDGER_HOLD)
    return await at.run("reserve", user_id, body, member_id=member)


@router.post(
    "/api/accounts/{user_id}/reservations/{reservation_id}/capture", response_model=HoldPublic, responses=REFUSALS
)
async def capture(
    user_id: uuid.UUID, reservation_id: uuid.UUID, at: DoorDep, body: CaptureIn | None = None
) -> JSONResponse:
    """Capture a hold you placed (all of it, or part: the rest is released). A media job's hold is a 409:
    only the job settles it, for admins and services too (CreditAccount.check_not_held_for_a_job says why)."""
    member_acting_for(at.principal, str(user_id), Scope.LEDGER_HOLD)
    return await at.run("capture", user_id, body or CaptureIn(), reservation_id=str(reservation_id))


@router.post(
    "/api/accounts/{user_id}/reservations/{reservation_id}/release", response_model=HoldPublic, responses=REFUSALS
)
async def release(
    user_id: uuid.UUID, reservation_id: uuid.UUID, at: DoorDep, body: ReleaseIn | None = None
) -> JSONResponse:
    """Release a hold you placed. A media job's hold is a 409, as for capture."""
    member_acting_for(at.principal, str(user_id), Scope.LEDGER_HOLD)
    return await at.run("release", user_id, body or ReleaseIn(), reservation_id=str(reservation_id))


@router.post(
    "/api/admin/accounts/{user_id}/adjustments",
    status_code=201,
    tags=["admin"],
    response_model=EntryPublic,
    responses=REFUSALS,
)
async def adjust(
    user_id: uuid.UUID, body: AdjustmentIn, admin: Annotated[Principal, privileged(Scope.LEDGER_ADJUST)], at: DoorDep
) -> JSONResponse:
    return await at.run("adjust", user_id, body, admin_id=admin.user_id)


@router.put(
    "/api/org/members/{clerk_user_id}/limit", tags=["organizations"], response_model=MemberLimitPublic,
    responses=responses(403, 409, 422, 429),
)  # fmt: skip
async def set_member_limit(
    clerk_user_id: Annotated[str, Path(pattern=CLERK_USER_ID, max_length=200)], body: MemberLimitIn, at: DoorDep,
    ledger: LedgerDep,
) -> JSONResponse:  # fmt: skip
    """Set how much a member may spend of your organization's account each calendar month (UTC; null: no limit).
    For the organization's admins, with a token active in it; the limit holds from the member's next spend."""
    org = ensure_org_admin(at.principal)
    member = user_id_for(clerk_user_id)
    limit = SetMemberLimit(
        user_id=org.account_id, key=client_key(at.key), cause_id=at.request_id, correlation_id=at.request_id,
        member_id=member, monthly_credits=body.monthly_credits, admin_id=at.principal.user_id,
    )  # fmt: skip
    done = await at.submit(limit)
    if done.status_code != 200:
        return done
    account = await asyncio.to_thread(ledger.account, org.account_id)
    assert account is not None, "the limit was set on it"
    used = account.member_used(member, month_of(clock.now()))
    limit_now = account.members[member].limit
    answer = MemberLimitPublic(
        org_id=org.id, account_id=org.account_id, member_id=member, clerk_user_id=clerk_user_id,
        monthly_credits=limit_now, used=used,
    )  # fmt: skip
    return JSONResponse(
        answer.model_dump(), headers=dict(done.headers.items()) if done.headers.get("idempotent-replayed") else None
    )


def _capped_account(principal: Principal) -> str:
    """Whose cap: the caller's own account, or their active organization's (its admins set that)."""
    if principal.role == "service":
        raise Problem(403, "This endpoint is for signed-in users.")
    return ensure_org_admin(principal).account_id if principal.org is not None else principal.user_id


@router.get("/api/user/limits", response_model=UsageCapPublic, tags=["accounts"], responses=responses(403, 404))
async def get_usage_cap(principal: CurrentPrincipal, ledger: LedgerDep) -> UsageCapPublic:
    """The monthly cap on what your account (or, with a token active in one, your organization's) may spend."""
    return await _cap_of(ledger, _capped_account(principal))


@router.put(
    "/api/user/limits", response_model=UsageCapPublic, tags=["accounts"], responses=responses(403, 404, 409, 429)
)
async def set_usage_cap(body: UsageCapIn, at: DoorDep, ledger: LedgerDep) -> JSONResponse | UsageCapPublic:
    """Cap what your account may spend per calendar month (UTC; null: no cap): a debit, hold or job that would
    pass it is refused with a 402 naming `cap`. With a token active in an organization, its admins cap its account."""
    account_id = _capped_account(at.principal)
    cap = SetUsageCap(
        user_id=account_id, key=client_key(at.key), cause_id=at.request_id, correlation_id=at.request_id,
        monthly_credits=body.monthly_usage_credits, set_by=at.principal.user_id,
    )  # fmt: skip
    done = await at.submit(cap)
    if done.status_code != 200:
        return done
    return await _cap_of(ledger, account_id)


async def _cap_of(ledger: Ledger, account_id: str) -> UsageCapPublic:
    account = await asyncio.to_thread(ledger.account, account_id)
    if account is None:
        raise Problem(404, f"No credit account {account_id}.")
    month = month_of(clock.now())
    return UsageCapPublic(account_id=account_id, monthly_usage_credits=account.usage.limit, month=month,
                          used=account.used(month))  # fmt: skip
