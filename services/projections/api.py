"""The frontend-facing read API."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.sse import EventSourceResponse, ServerSentEvent
from nats.js.errors import NotFoundError
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from services.projections import queries, store
from services.projections.projection import CONSUMERS
from shared.auth import (
    CurrentPrincipal,
    Principal,
    SignedInUser,
    bearer_scheme,
    current_principal,
    privileged,
    require_user,
)
from shared.bus import deadletters
from shared.contracts import Envelope
from shared.contracts.ledger import EntryType
from shared.guard import GuardedRoute
from shared.inputs import CursorCodec, Moment
from shared.params import PageCursor
from shared.problems import Problem, responses
from shared.scopes import Scope

router = APIRouter(tags=["user"], route_class=GuardedRoute)


async def get_pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.runtime.pool


PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
StatusReader = Annotated[Principal, privileged(Scope.PROJECTIONS_STATUS)]


class CreditEntry(BaseModel):
    id: str
    type: str
    amount: int
    balance_after: int
    description: str
    metadata: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, row: dict[str, Any]) -> CreditEntry:
        return cls(**{k: v for k, v in row.items() if k != "seq"})


class CreditsResponse(BaseModel):
    user_id: str
    balance: int
    reserved: int | None = Field(description="held for running jobs (now only: null for a past moment)")
    available: int | None = Field(description="balance less reserved (now only: null for a past moment)")
    as_of: datetime | None = Field(default=None, description="the moment asked for with ?at=, if any")
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
    type: Annotated[EntryType | None, Query(description="only entries of this type")] = None,
    at: Annotated[Moment | None, Query(description="the balance and history as of this moment (ISO 8601)")] = None,
) -> CreditsResponse:
    """The balance and the credit history, newest first; with `at`, both as they stood at that moment."""
    before = HISTORY_CURSOR.decode(cursor)
    entry_type = type.value if type else None
    async with pool.connection() as conn:
        row = await queries.balance_of(conn, principal.user_id)
        entries = await queries.entries_of(
            conn, principal.user_id, before=before, limit=limit + 1, entry_type=entry_type, at=at
        )
        past_balance = await queries.balance_at(conn, principal.user_id, at) if at else None
    page, more = entries[:limit], len(entries) > limit
    history = [CreditEntry.of(e) for e in page]
    next_cursor = HISTORY_CURSOR.encode(page[-1]["seq"]) if more else None
    if past_balance is not None:
        return CreditsResponse(user_id=principal.user_id, balance=past_balance, reserved=None, available=None,
                               as_of=at, history=history, next_cursor=next_cursor)  # fmt: skip
    balance = row["balance"] if row else 0
    reserved = row["reserved"] if row else 0
    return CreditsResponse(user_id=principal.user_id, balance=balance, reserved=reserved,
                           available=balance - reserved, history=history, next_cursor=next_cursor)  # fmt: skip


class Profile(BaseModel):
    id: str
    clerk_id: str
    email: str
    first_name: str | None
    last_name: str | None
    avatar: str | None
    is_active: bool
    registered_at: datetime


class Account(BaseModel):
    balance: int
    reserved: int
    available: int


class Transaction(BaseModel):
    id: str
    type: str  # CREDIT_PURCHASE | SUBSCRIPTION
    status: str  # PENDING | COMPLETED | FAILED | CANCELLED | REFUNDED
    amount: int  # cents
    currency: str
    credits: int
    description: str
    stripe_payment_intent_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class SubscriptionView(BaseModel):
    id: str
    plan_id: str | None
    status: str  # ACTIVE | PAST_DUE | CANCELLED
    credits: int | None
    amount_cents: int | None
    current_period_end: datetime | None
    updated_at: datetime


class Counts(BaseModel):
    images: int
    videos: int
    transactions: int


class UserProfile(BaseModel):
    """The user with everything related (the seed's getUserWithData)."""

    user: Profile
    account: Account
    counts: Counts
    transactions: list[Transaction]
    subscription: SubscriptionView | None


class Activity(BaseModel):
    kind: str
    notification: bool
    message: str
    data: dict[str, Any]
    occurred_at: datetime


class UsageDay(BaseModel):
    day: date
    operation: str  # a media operation, or `other` for a direct debit
    credits: int
    count: int


class Expiring(BaseModel):
    lot_id: str
    remaining: int  # as the ledger warned (spending since may have taken some)
    expires_at: datetime


class LotView(BaseModel):
    lot_id: str
    amount: int
    remaining: int
    expires_at: datetime | None  # null: never
    description: str | None


class Totals(BaseModel):
    credits_bought: int
    credits_spent: int
    money_spent_cents: int


class Dashboard(BaseModel):
    """The dashboard's data in one answer (the seed's getDashboardData)."""

    user: Profile
    account: Account
    counts: Counts
    totals: Totals
    recent_activity: list[Activity]
    credit_history: list[CreditEntry]
    usage: list[UsageDay]
    lots: list[LotView] = Field(description="credit left by lot, in spending order (soonest expiry first)")
    expiring_soon: list[Expiring]
    subscription: SubscriptionView | None


async def _account(conn: Any, user_id: str) -> Account:
    row = await queries.balance_of(conn, user_id)
    balance, reserved = (row["balance"], row["reserved"]) if row else (0, 0)
    return Account(balance=balance, reserved=reserved, available=balance - reserved)


async def _user(conn: Any, user_id: str) -> Profile:
    row = await queries.user_of(conn, user_id)
    if row is None:
        raise Problem(404, "No profile yet: sign in first (POST /api/user/sync), then it appears here within a second.")
    return Profile(**row)


async def _subscription(conn: Any, user_id: str) -> SubscriptionView | None:
    row = await queries.subscription_of(conn, user_id)
    return SubscriptionView(**row) if row else None


@router.get("/api/user/profile", response_model=UserProfile, responses=responses(404))
async def profile(principal: SignedInUser, pool: PoolDep) -> UserProfile:
    """The token's user with their account, counts, latest transactions and subscription."""
    async with pool.connection() as conn:
        return UserProfile(
            user=await _user(conn, principal.user_id), account=await _account(conn, principal.user_id),
            counts=Counts(**await queries.counts_of(conn, principal.user_id)),
            transactions=[Transaction(**t) for t in await queries.transactions_of(conn, principal.user_id, 20)],
            subscription=await _subscription(conn, principal.user_id),
        )  # fmt: skip


USAGE_DAYS = 30


@router.get("/api/user/dashboard", response_model=Dashboard, responses=responses(404))
async def dashboard(principal: SignedInUser, pool: PoolDep) -> Dashboard:
    """Everything the dashboard shows: balance, counts, totals, recent activity (notifications marked),
    the last credit entries, credits used per operation per day over 30 days, what expires soon."""
    user_id = principal.user_id
    async with pool.connection() as conn:
        entries = await queries.entries_of(conn, user_id, before=None, limit=10)
        return Dashboard(
            user=await _user(conn, user_id), account=await _account(conn, user_id),
            counts=Counts(**await queries.counts_of(conn, user_id)),
            totals=Totals(**await queries.totals_of(conn, user_id)),
            recent_activity=[Activity(**a) for a in await queries.activity_of(conn, user_id, 20)],
            credit_history=[CreditEntry.of(e) for e in entries],
            usage=[UsageDay(**u) for u in await queries.usage_by_day(conn, user_id, USAGE_DAYS)],
            lots=[LotView(**lot) for lot in await queries.lots_of(conn, user_id)],
            expiring_soon=[Expiring(**x) for x in await queries.expiring_of(conn, user_id)],
            subscription=await _subscription(conn, user_id),
        )  # fmt: skip


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
async def status(principal: StatusReader, request: Request, pool: PoolDep) -> ProjectionsStatus:
    """Per read model (admin or service): where it stands in its stream and how far behind it is."""
    js = request.app.state.runtime.js
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


async def _age_between(js: Any, stream: str, first: int, last: int) -> float:
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


# -- the live stream ----------------------------------------------------------------------------------

TICKET_SECONDS = 60
# How often a stream looks for changes nobody woke it for (another copy of projections applied them).
STREAM_POLL_SECONDS = 1.0
FEED_BATCH = 100


class StreamTicket(BaseModel):
    ticket: str = Field(description="pass as ?ticket= to /api/user/credits/stream; single use")
    expires_at: datetime


@router.post("/api/user/credits/stream-ticket", response_model=StreamTicket)
async def stream_ticket(principal: SignedInUser, pool: PoolDep) -> StreamTicket:
    """A short-lived, single-use ticket that opens the caller's live stream: for a browser's EventSource,
    which cannot send an Authorization header (a bearer token never goes in a URL)."""
    ticket = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(seconds=TICKET_SECONDS)
    async with pool.connection() as conn:
        await store.issue_ticket(conn, _ticket_hash(ticket), principal.user_id, expires_at)
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
    return user_id


@router.get(
    "/api/user/credits/stream", response_class=EventSourceResponse, responses=responses(400, 401, 403),
)  # fmt: skip
async def credits_stream(
    pool: PoolDep,
    request: Request,
    user_id: Annotated[str, Depends(stream_user)],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", pattern=r"^\d{1,18}$")] = None,
    after: Annotated[int | None, Query(ge=0, le=10**18, description="as Last-Event-ID, for a new EventSource")] = None,
) -> AsyncIterable[ServerSentEvent]:
    """Server-sent events: `balance` (balance, reserved, available) on every change of the account, and
    `notification` (kind, message, data) for each notification, each with its position in the user's feed
    as the event id. Without Last-Event-ID it opens with the balance as it stands; with it (a browser
    reconnecting sends it) it resumes after that event, with no gap and no repeat."""
    wakeups = request.app.state.wakeups
    after = int(last_event_id) if last_event_id is not None else after
    async with wakeups.watching(user_id) as woken:
        if after is None:
            async with pool.connection() as conn:
                after = await queries.feed_head(conn, user_id)  # first: a change after it is sent again
                account = await _account(conn, user_id)
            yield ServerSentEvent(id=str(after), event="balance", data=account.model_dump())
        while True:
            woken.clear()
            async with pool.connection() as conn:
                rows = await queries.feed_after(conn, user_id, after, FEED_BATCH)
            for row in rows:
                after = int(row["n"])
                yield ServerSentEvent(id=str(after), event=row["kind"], data=row["data"])
            if len(rows) < FEED_BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), STREAM_POLL_SECONDS)


# -- replay ---------------------------------------------------------------------------------------------


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
    principal: Annotated[Principal, privileged(Scope.PROJECTIONS_REPLAY)], request: Request
) -> ReplayStatus:
    """Rebuild every read model from sequence 1 of each stream beside the live ones, then swap them in
    atomically (admin or service). Reads go on meanwhile; GET this path for progress."""
    replayer = request.app.state.replayer
    if replayer.running:
        raise Problem(409, "A replay is running already: GET /api/projections/replay shows how far it is.")
    return ReplayStatus(**replayer.start().public())


@router.get("/api/projections/replay", response_model=ReplayStatus, responses=responses(403))
async def replay_status(principal: StatusReader, request: Request) -> ReplayStatus:
    return ReplayStatus(**request.app.state.replayer.progress.public())
