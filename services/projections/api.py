"""The user's reads: their profile, credits and dashboard, from the read models."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from psycopg import AsyncConnection
from pydantic import Field

from services.projections import queries
from services.projections.deps import PoolDep
from services.projections.schemas import (
    Account,
    Activity,
    Counts,
    CreditEntry,
    CreditsResponse,
    Dashboard,
    Expiring,
    Export,
    ExportedJob,
    ExportedLot,
    JobLinks,
    LotView,
    MemberUsage,
    OrgCreditsResponse,
    OrgDashboard,
    OrgTotals,
    OrgView,
    Profile,
    Spending,
    SubscriptionView,
    Totals,
    Transaction,
    UsageDay,
    UserProfile,
)
from shared import clock
from shared.auth import CurrentPrincipal, Principal, SignedInUser
from shared.contracts.ledger import EntryType
from shared.guard import GuardedRoute
from shared.inputs import CursorCodec, Moment
from shared.params import PageCursor
from shared.problems import Problem, responses

router = APIRouter(tags=["user"], route_class=GuardedRoute)


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
    account = Account.of(row)
    return CreditsResponse(user_id=principal.user_id, balance=account.balance, reserved=account.reserved,
                           available=account.available, history=history, next_cursor=next_cursor)  # fmt: skip


async def _account(conn: AsyncConnection, user_id: str) -> Account:
    return Account.of(await queries.balance_of(conn, user_id))


async def _user(conn: AsyncConnection, user_id: str) -> Profile:
    row = await queries.user_of(conn, user_id)
    if row is None:
        raise Problem(404, "No profile yet: sign in first (POST /api/user/sync), then it appears here within a second.")
    return Profile(**row)


async def _subscription(conn: AsyncConnection, user_id: str) -> SubscriptionView | None:
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
    now = clock.now()
    async with pool.connection() as conn:
        entries = await queries.entries_of(conn, user_id, before=None, limit=10)
        spending = Spending(month=now.strftime("%Y-%m"), **await queries.spending_of(conn, user_id, month_start(now)))
        return Dashboard(
            user=await _user(conn, user_id), account=await _account(conn, user_id),
            counts=Counts(**await queries.counts_of(conn, user_id)),
            totals=Totals(**await queries.totals_of(conn, user_id)),
            recent_activity=[Activity(**a) for a in await queries.activity_of(conn, user_id, 20)],
            credit_history=[CreditEntry.of(e) for e in entries],
            usage=[UsageDay(**u) for u in await queries.usage_by_day(conn, user_id, USAGE_DAYS)],
            lots=[LotView(**lot) for lot in await queries.lots_of(conn, user_id)],
            expiring_soon=[Expiring(**x) for x in await queries.expiring_of(conn, user_id)],
            subscription=await _subscription(conn, user_id), spending=spending,
        )  # fmt: skip


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


EXPORT_FORMAT = "creditstream-export/1"
# Media's paths for a job's record and file, by the kind of record it made.
MEDIA_RECORDS = {"image": "images", "video": "videos"}


def job_view(row: dict[str, Any]) -> ExportedJob:
    records = MEDIA_RECORDS.get(row["resource_type"] or "")
    made = records is not None and row["resource_id"] is not None and row["status"] == "COMPLETED"
    record = f"/api/{records}/{row['resource_id']}"
    return ExportedJob(**row, links=JobLinks(record=record, file=f"{record}/file") if made else None)


# Documented as Export; answered as a stream of it (a returned Response is not re-serialized).
@router.get("/api/user/export", response_model=Export, responses=responses(404))
async def export(principal: SignedInUser, pool: PoolDep) -> StreamingResponse:
    """Everything the read models hold of the token's user as one JSON document (`Export`): profile, balance,
    subscriptions, transactions, lots, media jobs with their files' paths, activity, and the whole credit
    history, read in one snapshot and streamed (a long history is never held in memory at once)."""
    user_id = principal.user_id
    async with pool.connection() as conn:
        await _user(conn, user_id)  # a 404 before anything is streamed

    async def document() -> AsyncIterator[bytes]:
        async with pool.connection() as conn, conn.transaction():
            # One snapshot: the history agrees with the balance however the read models move meanwhile.
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            head = Export(
                format=EXPORT_FORMAT,
                exported_at=datetime.now(UTC),
                user=await _user(conn, user_id),
                account=await _account(conn, user_id),
                subscriptions=[SubscriptionView(**r) for r in await queries.all_subscriptions_of(conn, user_id)],
                transactions=[Transaction(**t) for t in await queries.transactions_of(conn, user_id, None)],
                lots=[ExportedLot(**lot) for lot in await queries.all_lots_of(conn, user_id)],
                media_jobs=[job_view(j) for j in await queries.all_jobs_of(conn, user_id)],
                activity=[Activity(**a) for a in await queries.activity_of(conn, user_id, None)],
                credit_history=[],
            ).model_dump_json()
            yield head.removesuffix("]}").encode()  # credit_history is the last field: its entries follow
            separator = b""
            async for entry in queries.all_entries_of(conn, user_id):
                yield separator + CreditEntry.of(entry).model_dump_json().encode()
                separator = b","
            yield b"]}"

    filename = f"creditstream-export-{user_id}.json"
    return StreamingResponse(document(), media_type="application/json",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})  # fmt: skip


CSV_COLUMNS = ("id", "created_at", "type", "amount", "balance_after", "description", "metadata", "member_id")
# A cell a spreadsheet would run as a formula (OWASP's CSV injection): kept as text by a leading quote.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_line(values: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue().encode()


def _text_cell(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_START) else value


def _entry_cells(entry: CreditEntry) -> list[str]:
    return [
        entry.id, entry.created_at.isoformat(), entry.type, str(entry.amount), str(entry.balance_after),
        _text_cell(entry.description), _text_cell(json.dumps(entry.metadata, sort_keys=True, ensure_ascii=False)),
        entry.member_id or "",
    ]  # fmt: skip


@router.get(
    "/api/user/credits/export", response_class=StreamingResponse, responses={
        200: {"content": {"text/csv": {}}, "description": "the whole credit history, newest first, one entry a row"},
    },
)  # fmt: skip
async def export_credits(
    principal: SignedInUser, pool: PoolDep, format: Annotated[Literal["csv"], Query()] = "csv"
) -> StreamingResponse:
    """The token's user's whole credit history as CSV (RFC 4180, UTF-8, newest first; `metadata` as JSON; a text
    cell a spreadsheet would take for a formula starts with a `'`), read in one snapshot and streamed."""
    user_id = principal.user_id

    async def rows() -> AsyncIterator[bytes]:
        yield csv_line(list(CSV_COLUMNS))
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            async for entry in queries.all_entries_of(conn, user_id):
                yield csv_line(_entry_cells(CreditEntry.of(entry)))

    filename = f"creditstream-credits-{user_id}.{format}"
    return StreamingResponse(rows(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})  # fmt: skip


# -- an organization's shared account: its members read it, its admins see every member ----------------------


async def _org(conn: AsyncConnection, principal: Principal) -> OrgView:
    active = principal.org
    if active is None:
        raise Problem(404, "The token has no active organization: switch to one in Clerk first.")
    row = await queries.organization_of(conn, active.id)
    if row is None:
        raise Problem(404, f"Organization {active.id} is not known here yet (sign in with it first) or was deleted.")
    return OrgView(id=row["org_id"], name=row["name"], slug=row["slug"], account_id=row["account_id"], role=active.role)


def _own_unless_admin(principal: Principal) -> str | None:
    """Whose spending an organization's reader sees: an admin everyone's (None), a member their own."""
    assert principal.org is not None
    return None if principal.org.is_admin else principal.user_id


@router.get(
    "/api/org/credits", response_model=OrgCreditsResponse, tags=["organizations"], responses=responses(400, 404)
)
async def org_credits(
    principal: SignedInUser, pool: PoolDep, cursor: PageCursor = None, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> OrgCreditsResponse:
    """The balance of the token's active organization and its credit history, newest first, with the member who
    spent each entry: all of it for the organization's admins; what they spent themselves for its members."""
    before = HISTORY_CURSOR.decode(cursor)
    async with pool.connection() as conn:
        org = await _org(conn, principal)
        account = await _account(conn, org.account_id)
        entries = await queries.entries_of(conn, org.account_id, before=before, limit=limit + 1,
                                           member_id=_own_unless_admin(principal))  # fmt: skip
    page, more = entries[:limit], len(entries) > limit
    return OrgCreditsResponse(
        org=org, balance=account.balance, reserved=account.reserved, available=account.available,
        history=[CreditEntry.of(e) for e in page], next_cursor=HISTORY_CURSOR.encode(page[-1]["seq"]) if more else None,
    )  # fmt: skip


@router.get("/api/org/dashboard", response_model=OrgDashboard, tags=["organizations"], responses=responses(404))
async def org_dashboard(principal: SignedInUser, pool: PoolDep) -> OrgDashboard:
    """The organization's account this month: its balance and lots, and each member's usage against their
    monthly limit (an admin sees every member, a member themselves)."""
    now = clock.now()
    async with pool.connection() as conn:
        org = await _org(conn, principal)
        members = await queries.members_usage(conn, org.id, org.account_id, month_start(now))
        own = _own_unless_admin(principal)
        shown = [m for m in members if own is None or m["user_id"] == own]
        totals = await queries.totals_of(conn, org.account_id)
        return OrgDashboard(
            org=org, month=now.strftime("%Y-%m"), account=await _account(conn, org.account_id),
            members=[MemberUsage(**m) for m in shown],
            totals=OrgTotals(used_this_month=sum(m["used"] for m in shown), credits_bought=totals["credits_bought"],
                             credits_spent=totals["credits_spent"]),
            lots=[LotView(**lot) for lot in await queries.lots_of(conn, org.account_id)],
        )  # fmt: skip
