"""Identity's admin API: find users, deactivate and reactivate them. Admins and services only."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, ConfigDict

from services.identity.api import UserPublic, get_identity
from services.identity.application import Erase, Identity, SetActive
from services.identity.domain import SelfDeactivationError, User, UserErasedError, UserNotFoundError
from shared.auth import Principal, privileged
from shared.guard import GuardedRoute
from shared.inputs import MediumText, ShortText
from shared.paging import After, newest_first
from shared.params import CorrelationId, PageCursor
from shared.problems import Problem, responses
from shared.scopes import Scope

router = APIRouter(prefix="/api/admin/users", tags=["admin"], route_class=GuardedRoute)
IdentityDep = Annotated[Identity, Depends(get_identity)]
Reader = Annotated[Principal, privileged(Scope.IDENTITY_READ)]
Manager = Annotated[Principal, privileged(Scope.IDENTITY_MANAGE)]
Eraser = Annotated[Principal, privileged(Scope.IDENTITY_ERASE)]


class UserPage(BaseModel):
    users: list[UserPublic]
    next_cursor: str | None


class DeactivateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: MediumText | None = None


class StatusResponse(BaseModel):
    user: UserPublic
    changed: bool


@router.get("", response_model=UserPage, responses=responses(400))
async def list_users(
    _: Reader,
    identity: IdentityDep,
    q: Annotated[ShortText | None, Query(description="part of an email or name")] = None,
    cursor: PageCursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> UserPage:
    async def fetch(after: After, n: int) -> list[User]:
        return await identity.search(q.strip() if q else None, after, n)

    page, next_cursor = await newest_first(cursor, limit, fetch)
    return UserPage(users=[UserPublic.of(u) for u in page], next_cursor=next_cursor)


@router.get("/{user_id}", response_model=UserPublic)
async def get_user(user_id: uuid.UUID, _: Reader, identity: IdentityDep) -> UserPublic:
    try:
        return UserPublic.of(await identity.user(str(user_id)))
    except UserNotFoundError as exc:
        raise Problem(404, f"No user {user_id}.") from exc


@router.post("/{user_id}/deactivate", response_model=StatusResponse, responses=responses(409))
async def deactivate(
    user_id: uuid.UUID,
    principal: Manager,
    identity: IdentityDep,
    correlation_id: CorrelationId = None,
    body: Annotated[DeactivateRequest | None, Body()] = None,
) -> StatusResponse:
    reason = (body or DeactivateRequest()).reason
    return await _set_active(identity, str(user_id), False, principal.user_id, reason, correlation_id)


@router.post("/{user_id}/erase", response_model=UserPublic, responses=responses(404))
async def erase(
    user_id: uuid.UUID, principal: Eraser, identity: IdentityDep, correlation_id: CorrelationId = None
) -> UserPublic:
    """Forget the user (GDPR Art. 17), as Clerk's user.deleted does: the profile is blanked here at once, and
    every service drops what it holds of them within seconds (identity.user.erased); their credits and
    payments stay under the pseudonymous id. Repeating it changes nothing."""
    try:
        return UserPublic.of(await identity.execute(Erase(str(user_id), correlation_id, by=principal.user_id)))
    except UserNotFoundError as exc:
        raise Problem(404, f"No user {user_id}.") from exc


@router.post("/{user_id}/reactivate", response_model=StatusResponse, responses=responses(409))
async def reactivate(
    user_id: uuid.UUID, principal: Manager, identity: IdentityDep, correlation_id: CorrelationId = None
) -> StatusResponse:
    return await _set_active(identity, str(user_id), True, principal.user_id, None, correlation_id)


async def _set_active(
    identity: Identity, user_id: str, active: bool, actor: str, reason: str | None, correlation_id: str | None
) -> StatusResponse:
    try:
        change = await identity.execute(SetActive(user_id, active, reason, actor, correlation_id))
    except UserNotFoundError as exc:
        raise Problem(404, f"No user {user_id}.") from exc
    except SelfDeactivationError as exc:
        raise Problem(409, "You cannot deactivate your own account.") from exc
    except UserErasedError as exc:
        raise Problem(409, f"User {user_id} was erased: a forgotten user is not reactivated.") from exc
    return StatusResponse(user=UserPublic.of(change.user), changed=change.changed)
