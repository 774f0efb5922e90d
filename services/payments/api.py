"""Payments' HTTP API for signed-in users: the packs, checkout, and their own transactions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict

from services.payments.application import Payments
from services.payments.domain import (
    Kind,
    Status,
    StripeUnavailableError,
    Transaction,
    UnknownPackageError,
)
from shared.auth import SignedInUser
from shared.credits import PACKAGES
from shared.guard import GuardedRoute
from shared.idempotency import IdempotencyConflictError
from shared.inputs import ShortText
from shared.paging import After, newest_first
from shared.params import CorrelationId, IdempotencyKey, PageCursor
from shared.problems import Problem, responses

router = APIRouter(route_class=GuardedRoute)


async def get_payments(request: Request) -> Payments:
    return request.app.state.payments


PaymentsDep = Annotated[Payments, Depends(get_payments)]


class CreditPackagePublic(BaseModel):
    id: str
    name: str
    credits: int
    price_cents: int
    currency: str
    popular: bool


class TransactionPublic(BaseModel):
    id: str
    user_id: str
    type: Kind
    status: Status
    amount: int  # cents
    currency: str
    credits: int
    description: str
    package_id: str | None
    stripe_payment_intent_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, tx: Transaction) -> TransactionPublic:
        fields = {k: v for k, v in tx.__dict__.items() if k not in ("kind", "amount_cents")}
        return cls(**fields, type=tx.kind, amount=tx.amount_cents)


class TransactionPage(BaseModel):
    transactions: list[TransactionPublic]
    next_cursor: str | None


class CheckoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    package_id: ShortText


class CheckoutResponse(BaseModel):
    transaction_id: str
    client_secret: str
    amount: int
    currency: str
    credits: int
    status: Status


class StatusTotals(BaseModel):
    count: int
    amount: int


class TransactionStats(BaseModel):
    count: int
    by_status: dict[Status, StatusTotals]
    total_spent: int  # cents paid and kept: completed payments, and refunded ones less their refund
    credits_bought: int  # of those payments, less the credits refunds took back
    currency: str = "USD"


@router.get("/api/credit-packages", response_model=list[CreditPackagePublic], tags=["payments"])
async def credit_packages() -> list[CreditPackagePublic]:
    return [CreditPackagePublic(**p.__dict__) for p in PACKAGES.values()]


@router.post(
    "/api/checkout", response_model=CheckoutResponse, status_code=201, tags=["payments"],
    responses=responses(404, 409, 502, 503),
)  # fmt: skip
async def checkout(
    body: CheckoutRequest,
    principal: SignedInUser,
    payments: PaymentsDep,
    key: IdempotencyKey,
    correlation_id: CorrelationId = None,
) -> CheckoutResponse:
    """Start buying a pack: a PENDING transaction and a Stripe PaymentIntent, whose client secret the
    frontend confirms with Stripe.js (card details go to Stripe only). A retry with the same key
    answers the same transaction and PaymentIntent."""
    try:
        done = await payments.checkout(principal.user_id, body.package_id, key, correlation_id)
    except UnknownPackageError as exc:
        raise Problem(404, f"No credit package {body.package_id!r}; see /api/credit-packages.") from exc
    except IdempotencyConflictError as exc:
        raise Problem(409, "This Idempotency-Key was used for a different checkout.") from exc
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc
    tx = done.transaction
    return CheckoutResponse(
        transaction_id=tx.id, client_secret=done.client_secret, amount=tx.amount_cents, currency=tx.currency,
        credits=tx.credits, status=tx.status,
    )  # fmt: skip


def stripe_problem(exc: StripeUnavailableError) -> Problem:
    return Problem(502, f"Stripe did not complete the request; nothing was charged or changed. {exc}")


StatusFilter = Annotated[list[Status], Query(alias="status", description="any of these statuses")]
KindFilter = Annotated[list[Kind], Query(alias="type", description="any of these types")]
Limit = Annotated[int, Query(ge=1, le=200)]


async def transaction_page(
    payments: Payments, user_id: str | None, statuses: list[Status], kinds: list[Kind], cursor: str | None, limit: int
) -> TransactionPage:
    async def fetch(after: After, n: int) -> list[Transaction]:
        return await payments.transactions(user_id, statuses, kinds, after, n)

    page, next_cursor = await newest_first(cursor, limit, fetch)
    return TransactionPage(transactions=[TransactionPublic.of(tx) for tx in page], next_cursor=next_cursor)


@router.get("/api/user/transactions", response_model=TransactionPage, tags=["user"], responses=responses(400))
async def my_transactions(
    principal: SignedInUser,
    payments: PaymentsDep,
    status: StatusFilter = [],  # noqa: B006  # FastAPI copies defaults per request
    kind: KindFilter = [],  # noqa: B006
    cursor: PageCursor = None,
    limit: Limit = 50,
) -> TransactionPage:
    """The token's user's transactions, newest first (getUserTransactions)."""
    return await transaction_page(payments, principal.user_id, status, kind, cursor, limit)


@router.get("/api/user/transactions/stats", response_model=TransactionStats, tags=["user"])
async def my_stats(principal: SignedInUser, payments: PaymentsDep) -> TransactionStats:
    """Counts and amounts by status, what was spent and the credits bought (getUserTransactionStats)."""
    rows = await payments.totals(principal.user_id)
    by_status = {Status(r["status"]): StatusTotals(count=int(r["count"]), amount=int(r["amount_cents"])) for r in rows}
    kept = [r for r in rows if r["status"] in (Status.COMPLETED, Status.REFUNDED)]
    return TransactionStats(
        count=sum(int(r["count"]) for r in rows),
        by_status=by_status,
        total_spent=sum(int(r["amount_cents"]) - int(r["refunded_cents"]) for r in kept),
        credits_bought=sum(int(r["credits"]) - int(r["credits_clawed_back"]) for r in kept),
    )
