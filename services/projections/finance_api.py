"""Finance's door (admin or service): what the credits sold are worth, month by month, per currency, from the
finance read model (shared/finance.py says how value moves and is rounded)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from services.projections import queries
from services.projections.api import csv_line
from services.projections.deps import PoolDep
from shared import clock, finance
from shared.auth import Principal, privileged
from shared.guard import GuardedRoute
from shared.problems import responses
from shared.scopes import Scope

router = APIRouter(tags=["finance"], route_class=GuardedRoute)

FinanceReader = Annotated[Principal, privileged(Scope.PROJECTIONS_FINANCE)]
Month = Annotated[
    str | None, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM (UTC); default: this month")
]
AccountId = Annotated[uuid.UUID | None, Query(description="one account's figures only")]
ROUNDING = (
    "Integer minor units (cents). A lot of C credits sold for V cents is worth round_half_up(V * n / C) once n of"
    " its credits have left it; each movement is the difference of two such figures, so a lot that is gone has"
    " moved exactly V and opening + sold - recognised - breakage - refunded = closing holds to the cent."
)
FIGURES = ("deferred_opening", "sold", "recognised", "breakage", "refunded", "deferred_closing")


class CurrencyFigures(BaseModel):
    currency: str = Field(description="ISO 4217 (XXX: a value recorded without a currency)")
    deferred_opening: int = Field(description="owed for credits unspent when the month began")
    sold: int = Field(description="paid lots granted in the month: purchases, top-ups, subscription periods")
    recognised: int = Field(description="revenue of credits spent (debited or captured) in the month")
    breakage: int = Field(description="value of paid credits that left unspent: expired, or taken by an operator")
    refunded: int = Field(description="value of credits a refund took back")
    deferred_closing: int = Field(description="owed for credits unspent when the month ended (or now)")


class RevenueReport(BaseModel):
    month: str
    account_id: str | None = Field(description="the one account reported, or None: every account")
    currencies: list[CurrencyFigures]
    rounding: str


class OperationRevenue(BaseModel):
    currency: str
    operation: str
    credits: int = Field(description="paid credits spent on it")
    recognised: int = Field(description="their revenue, cents")


class RevenueByOperation(BaseModel):
    month: str
    account_id: str | None
    operations: list[OperationRevenue]


def _text(account_id: uuid.UUID | None) -> str | None:
    return None if account_id is None else str(account_id)


def _month(month: str | None) -> str:
    return month or clock.now().strftime("%Y-%m")


@router.get(
    "/api/admin/finance/revenue", response_model=RevenueReport, responses={
        **responses(403, 422), 200: {"content": {"text/csv": {}}, "description": "the report; as CSV with format=csv"},
    },
)  # fmt: skip
async def revenue(
    principal: FinanceReader, pool: PoolDep, month: Month = None, account_id: AccountId = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> RevenueReport | StreamingResponse:  # fmt: skip
    """Per currency, in integer cents: what was owed when `month` began, what was sold, recognised, broken and
    refunded in it, and what was owed at its end."""
    month = _month(month)
    async with pool.connection() as conn:
        totals = await queries.finance_totals(conn, month, _text(account_id))
    figures = [
        CurrencyFigures(**asdict(f), deferred_closing=f.deferred_closing) for f in finance.month_figures(totals, month)
    ]
    if format == "json":
        return RevenueReport(month=month, account_id=_text(account_id), currencies=figures, rounding=ROUNDING)

    async def rows() -> AsyncIterator[bytes]:
        yield csv_line(["month", "currency", *FIGURES])
        for f in figures:
            yield csv_line([month, f.currency, *(str(getattr(f, k)) for k in FIGURES)])

    disposition = f'attachment; filename="revenue-{month}.csv"'
    return StreamingResponse(rows(), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": disposition})


@router.get("/api/admin/finance/revenue/by-operation", response_model=RevenueByOperation, responses=responses(403, 422))
async def revenue_by_operation(
    principal: FinanceReader, pool: PoolDep, month: Month = None, account_id: AccountId = None
) -> RevenueByOperation:
    """The month's recognised revenue by what it paid for (a media operation; `debit`: a direct debit; `hold`: a
    caller's own hold captured)."""
    month = _month(month)
    async with pool.connection() as conn:
        rows = await queries.recognised_by_operation(conn, month, _text(account_id))
    operations = [OperationRevenue(**r) for r in rows]
    return RevenueByOperation(month=month, account_id=_text(account_id), operations=operations)
