"""The frontend-facing read API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from services.projections import store
from shared.auth import CurrentPrincipal
from shared.guard import GuardedRoute
from shared.inputs import CursorCodec
from shared.params import PageCursor
from shared.problems import responses

router = APIRouter(tags=["user"], route_class=GuardedRoute)


async def get_pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.runtime.pool


PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]


class CreditEntry(BaseModel):
    id: str
    type: str
    amount: int
    balance_after: int
    description: str
    metadata: dict[str, Any]
    created_at: datetime


class CreditsResponse(BaseModel):
    user_id: str
    balance: int
    reserved: int
    available: int
    history: list[CreditEntry]
    next_cursor: str | None


# The stream sequence below which the next page starts.
HISTORY_CURSOR: CursorCodec[int] = CursorCodec(Annotated[int, Field(ge=1, le=2**62)])


@router.get("/api/user/credits", response_model=CreditsResponse, responses=responses(400))
async def credits(
    principal: CurrentPrincipal,
    pool: PoolDep,
    cursor: PageCursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> CreditsResponse:
    before = HISTORY_CURSOR.decode(cursor)
    async with pool.connection() as conn:
        row = await store.balance_of(conn, principal.user_id)
        entries = await store.entries_of(conn, principal.user_id, before=before, limit=limit + 1)
    balance = row["balance"] if row else 0
    reserved = row["reserved"] if row else 0
    page, more = entries[:limit], len(entries) > limit
    return CreditsResponse(
        user_id=principal.user_id,
        balance=balance,
        reserved=reserved,
        available=balance - reserved,
        history=[CreditEntry(**{k: v for k, v in e.items() if k != "seq"}) for e in page],
        next_cursor=HISTORY_CURSOR.encode(page[-1]["seq"]) if more else None,
    )
