"""The live stream: server-sent events of a user's balance changes and notifications, opened with a bearer
token or a short-lived, single-use ticket (a browser's EventSource cannot send an Authorization header)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from services.projections import queries, store
from services.projections.deps import PoolDep, from_state
from services.projections.schemas import Account
from shared.access import AccessList
from shared.auth import SignedInUser, bearer_scheme, current_principal, require_user
from shared.guard import GuardedRoute
from shared.limits import Slot, Slots, SlotsFullError, rate_limited
from shared.problems import Problem, responses

router = APIRouter(tags=["user"], route_class=GuardedRoute)

TICKET_SECONDS = 60
# How often a stream looks for changes nobody woke it for (another copy of projections applied them).
STREAM_POLL_SECONDS = 1.0
FEED_BATCH = 100
# How often an open stream says it is alive (Slots: a slot silent for 30 s is taken back).
SLOT_BEAT_SECONDS = 10


class Wakeups:
    """Wakes a user's streams when their read models change: the projection consumer calls `wake` after its
    transaction commits. Each stream waits on its own event, and polls anyway (a change applied by another copy
    of projections wakes nobody here)."""

    def __init__(self) -> None:
        self._waiting: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def wake(self, user_id: str) -> None:
        for event in self._waiting.get(user_id, ()):
            event.set()

    @asynccontextmanager
    async def watching(self, user_id: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiting[user_id].add(event)
        try:
            yield event
        finally:
            self._waiting[user_id].discard(event)
            if not self._waiting[user_id]:
                del self._waiting[user_id]


WakeupsDep = Annotated[Wakeups, Depends(from_state("wakeups"))]


class StreamTicket(BaseModel):
    ticket: str = Field(description="pass as ?ticket= to /api/user/credits/stream; single use")
    expires_at: datetime


@router.post(
    "/api/user/credits/stream-ticket", response_model=StreamTicket, responses=responses(429),
    dependencies=[rate_limited("stream-tickets")],
)  # fmt: skip
async def stream_ticket(principal: SignedInUser, pool: PoolDep) -> StreamTicket:
    """A short-lived, single-use ticket that opens the caller's live stream: for a browser's EventSource,
    which cannot send an Authorization header (a bearer token never goes in a URL)."""
    ticket = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(seconds=TICKET_SECONDS)
    async with pool.connection() as conn:
        await store.issue_ticket(conn, _ticket_hash(ticket), principal.user_id, expires_at)
    return StreamTicket(ticket=ticket, expires_at=expires_at)


@router.post(
    "/api/org/credits/stream-ticket", response_model=StreamTicket, responses=responses(404, 429),
    dependencies=[rate_limited("stream-tickets")], tags=["organizations"],
)  # fmt: skip
async def org_stream_ticket(principal: SignedInUser, pool: PoolDep) -> StreamTicket:
    """A ticket that opens the live stream of the token's active organization's balance (its members'), used as
    the personal one: `GET /api/user/credits/stream?ticket=...`."""
    if principal.org is None:
        raise Problem(404, "The token has no active organization: switch to one in Clerk first.")
    ticket = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(seconds=TICKET_SECONDS)
    async with pool.connection() as conn:
        await store.issue_ticket(conn, _ticket_hash(ticket), principal.org.account_id, expires_at)
    return StreamTicket(ticket=ticket, expires_at=expires_at)


def _ticket_hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


async def stream_user(
    request: Request,
    pool: PoolDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ticket: Annotated[str | None, Query(min_length=20, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> str:
    """Whose stream: a ticket's user (the ticket is used up), else the bearer token's."""
    if ticket is None:
        return (await require_user(await current_principal(request, None))).user_id
    async with pool.connection() as conn:
        user_id = await store.redeem_ticket(conn, _ticket_hash(ticket))
    if user_id is None:
        raise Problem(401, "This stream ticket is unknown, used or expired: ask for a new one.")
    if await request.app.state.access.is_deactivated(user_id):  # a ticket issued before
        raise Problem(403, "This account is deactivated.")
    return user_id


StreamUser = Annotated[str, Depends(stream_user)]


async def stream_position(
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", pattern=r"^\d{1,18}$")] = None,
    after: Annotated[int | None, Query(ge=0, le=10**18, description="as Last-Event-ID, for a new EventSource")] = None,
) -> int | None:
    """Where the stream resumes: after Last-Event-ID (a browser reconnecting), or `after`; None: now."""
    return int(last_event_id) if last_event_id is not None else after


StreamPosition = Annotated[int | None, Depends(stream_position)]


# Takes the position (unused) so that a malformed one is a 422 before a slot is taken: FastAPI does not call
# a dependency whose own dependencies failed.
async def stream_slot(request: Request, user_id: StreamUser, _: StreamPosition) -> Slot:
    """One of the user's few open streams (MAX_OPEN_STREAMS across every copy), or a 429. The stream
    closes it; one whose client never read a byte ages out (Slots)."""
    streams: Slots = request.app.state.streams
    try:
        return await streams.open(user_id)
    except SlotsFullError as exc:
        raise Problem(
            429, f"You have {streams.limit} live streams open, as many as one account may: close one first.",
            headers={"Retry-After": str(SLOT_BEAT_SECONDS)},
        ) from exc  # fmt: skip


@router.get(
    "/api/user/credits/stream", response_class=EventSourceResponse, responses=responses(400, 401, 403, 429),
)  # fmt: skip
async def credits_stream(
    request: Request,
    pool: PoolDep,
    wakeups: WakeupsDep,
    user_id: StreamUser,
    slot: Annotated[Slot, Depends(stream_slot)],
    after: StreamPosition,
) -> AsyncIterable[ServerSentEvent]:
    """Server-sent events: `balance` (balance, reserved, available) on every change of the account, and
    `notification` (kind, message, data) for each notification, each with its position in the user's feed
    as the event id. Without Last-Event-ID it opens with the balance as it stands; with it (a browser
    reconnecting sends it) it resumes after that event, with no gap and no repeat. A stream ends with a
    `closed` event (reason) when the account is deactivated."""
    access: AccessList = request.app.state.access
    beat_due = time.monotonic() + SLOT_BEAT_SECONDS
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(slot.close)
        woken = await stack.enter_async_context(wakeups.watching(user_id))
        if after is None:
            async with pool.connection() as conn:
                after = await queries.feed_head(conn, user_id)  # first: a change after it is sent again
                account = Account.of(await queries.balance_of(conn, user_id))
            yield ServerSentEvent(id=str(after), event="balance", data=account.model_dump())
        while True:
            if await access.is_deactivated(user_id):
                yield ServerSentEvent(event="closed", data={"reason": "This account is deactivated."})
                return
            if time.monotonic() > beat_due:
                beat_due = time.monotonic() + SLOT_BEAT_SECONDS
                if not await slot.beat():
                    return  # this process was silent so long its slot was given to another stream
            woken.clear()
            async with pool.connection() as conn:
                rows = await queries.feed_after(conn, user_id, after, FEED_BATCH)
            for row in rows:
                after = int(row["n"])
                yield ServerSentEvent(id=str(after), event=row["kind"], data=row["data"])
            if len(rows) < FEED_BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), STREAM_POLL_SECONDS)
