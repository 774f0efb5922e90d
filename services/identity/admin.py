"""Identity's admin API: find users, deactivate and reactivate them. Admins and services only."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, Field

from services.identity.api import UserPublic, get_identity
from services.identity.application import Identity
from services.identity.domain import SelfDeactivationError, User, UserNotFoundError
from shared.auth import Privileged
from shared.problems import Problem

router = APIRouter(prefix="/api/admin/users", tags=["admin"])
IdentityDep = Annotated[Identity, Depends(get_identity)]


class UserPage(BaseModel):
    users: list[UserPublic]
    next_cursor: str | None


class DeactivateRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class StatusResponse(BaseModel):
    user: UserPublic
    changed: bool


def encode_cursor(user: User) -> str:
    return base64.urlsafe_b64encode(json.dumps([user.created_at.isoformat(), user.id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_at, user_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created_at), str(uuid.UUID(user_id))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Problem(400, "Bad Request", "The cursor is not one this API returned.") from exc


@router.get("", response_model=UserPage)
async def list_users(
    _: Privileged,
    identity: IdentityDep,
    q: Annotated[str | None, Query(max_length=200, description="part of an email or name")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> UserPage:
    after = decode_cursor(cursor) if cursor else None
    users = await identity.search(q.strip() if q else None, after, limit + 1)
    page, more = users[:limit], len(users) > limit
    return UserPage(users=[UserPublic.of(u) for u in page], next_cursor=encode_cursor(page[-1]) if more else None)


@router.get("/{user_id}", response_model=UserPublic)
async def get_user(user_id: uuid.UUID, _: Privileged, identity: IdentityDep) -> UserPublic:
    try:
        return UserPublic.of(await identity.user(str(user_id)))
    except UserNotFoundError as exc:
        raise Problem(404, "Not Found", f"No user {user_id}.") from exc


@router.post("/{user_id}/deactivate", response_model=StatusResponse)
async def deactivate(
    user_id: uuid.UUID,
    principal: Privileged,
    identity: IdentityDep,
    request: Request,
    body: Annotated[DeactivateRequest | None, Body()] = None,
) -> StatusResponse:
    return await _set_active(
        identity, request, str(user_id), False, principal.user_id, (body or DeactivateRequest()).reason
    )


@router.post("/{user_id}/reactivate", response_model=StatusResponse)
async def reactivate(
    user_id: uuid.UUID, principal: Privileged, identity: IdentityDep, request: Request
) -> StatusResponse:
    return await _set_active(identity, request, str(user_id), True, principal.user_id, None)


async def _set_active(
    identity: Identity, request: Request, user_id: str, active: bool, actor: str, reason: str | None
) -> StatusResponse:
    try:
        change = await identity.set_active(
            user_id,
            active,
            reason=reason,
            actor_user_id=actor,
            correlation_id=request.headers.get("x-correlation-id"),
        )
    except UserNotFoundError as exc:
        raise Problem(404, "Not Found", f"No user {user_id}.") from exc
    except SelfDeactivationError as exc:
        raise Problem(409, "Conflict", "You cannot deactivate your own account.") from exc
    return StatusResponse(user=UserPublic.of(change.user), changed=change.changed)
