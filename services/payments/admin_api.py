"""Payments' admin API: every transaction, refunds, reconciliation with Stripe. Admins and services only."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass as public_dataclass

from services.payments.api import (
    KindFilter,
    Limit,
    PaymentsDep,
    PromoCodeText,
    StatusFilter,
    TransactionPage,
    TransactionPublic,
    stripe_problem,
    transaction_page,
)
from services.payments.commands import CreatePromo, DisablePromo, Reconcile, Refund, TransactionQuery
from services.payments.domain import (
    NotRefundableError,
    PromoCode,
    PromoExistsError,
    PromoUnavailableError,
    Status,
    TransactionNotFoundError,
)
from services.payments.gateway import StripeUnavailableError
from shared.auth import Principal, privileged
from shared.guard import GuardedRoute
from shared.idempotency import IdempotencyConflictError
from shared.inputs import MAX_SAFE_INTEGER, MediumText, Moment, Whole
from shared.params import IdempotencyKey, PageCursor
from shared.problems import Problem, responses
from shared.scopes import Scope

router = APIRouter(prefix="/api/admin", tags=["admin"], route_class=GuardedRoute)
Reader = Annotated[Principal, privileged(Scope.PAYMENTS_READ)]


class RefundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[MediumText, Field(min_length=1)]
    # Part of the payment, in cents; omitted: all of it. The credits taken back are the same share.
    amount_cents: Annotated[int, Field(strict=True, ge=1, le=MAX_SAFE_INTEGER), Whole] | None = None


class ReconcileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Moment | None = None  # omitted: the last 24 hours


class RepairPublic(BaseModel):
    transaction_id: str
    payment_intent_id: str
    before: Status
    after: Status
    announced: list[Status]


class ReconcileReport(BaseModel):
    since: datetime
    events_listed: int
    events_recovered: list[str]
    payment_intents_checked: int
    repaired: list[RepairPublic]
    unknown_payment_intents: list[str]
    refused: list[str]


@router.get("/transactions", response_model=TransactionPage, responses=responses(400))
async def all_transactions(
    _: Reader,
    payments: PaymentsDep,
    user_id: uuid.UUID | None = None,
    status: StatusFilter = [],  # noqa: B006  # FastAPI copies defaults per request
    kind: KindFilter = [],  # noqa: B006
    cursor: PageCursor = None,
    limit: Limit = 50,
) -> TransactionPage:
    query = TransactionQuery(str(user_id) if user_id else None, tuple(status), tuple(kind))
    return await transaction_page(payments, query, cursor, limit)


@router.get("/transactions/{transaction_id}", response_model=TransactionPublic, responses=responses(404))
async def one_transaction(transaction_id: uuid.UUID, _: Reader, payments: PaymentsDep) -> TransactionPublic:
    try:
        return TransactionPublic.of(await payments.transaction(str(transaction_id)))
    except TransactionNotFoundError as exc:
        raise Problem(404, f"No transaction {transaction_id}.") from exc


@router.post(
    "/transactions/{transaction_id}/refund", response_model=TransactionPublic, responses=responses(404, 409, 502, 503)
)
async def refund(
    transaction_id: uuid.UUID,
    body: RefundRequest,
    principal: Annotated[Principal, privileged(Scope.PAYMENTS_REFUND)],
    payments: PaymentsDep,
    key: IdempotencyKey,
) -> TransactionPublic:
    """Refund at Stripe and record its answer: the transaction is REFUNDED and the ledger takes the
    purchased credits back (never below zero; what was already spent is recorded as the shortfall).
    One refund per transaction: another is a 409; a retry with the same key answers the same."""
    command = Refund(
        transaction_id=str(transaction_id), reason=body.reason, amount_cents=body.amount_cents, key=key,
        admin_id=principal.user_id,
    )  # fmt: skip
    try:
        tx = await payments.handle(command)
    except TransactionNotFoundError as exc:
        raise Problem(404, f"No transaction {transaction_id}.") from exc
    except IdempotencyConflictError as exc:
        raise Problem(409, "This Idempotency-Key was used for a different refund.") from exc
    except NotRefundableError as exc:
        raise Problem(409, f"Not refundable: {exc}") from exc
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc
    return TransactionPublic.of(tx)


@router.post("/payments/reconcile", response_model=ReconcileReport, responses=responses(502, 503))
async def reconcile(
    _: Annotated[Principal, privileged(Scope.PAYMENTS_RECONCILE)],
    payments: PaymentsDep,
    body: Annotated[ReconcileRequest | None, Body()] = None,
) -> ReconcileReport:
    """Compare Stripe (its PaymentIntents and events) with our transactions and repair what missed
    webhooks left. Safe to run any number of times."""
    try:
        report = await payments.handle(Reconcile(since=body.since if body else None))
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc
    return ReconcileReport(
        since=report.since,
        events_listed=report.events_listed,
        events_recovered=report.events_recovered,
        payment_intents_checked=report.intents_checked,
        repaired=[RepairPublic(**{**r.__dict__, "announced": list(r.announced)}) for r in report.repaired],
        unknown_payment_intents=report.unknown_intents,
        refused=report.refused,
    )


# -- promo codes ------------------------------------------------------------------------------------------------

Promoter = Annotated[Principal, privileged(Scope.PAYMENTS_PROMOS)]


class PromoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: PromoCodeText  # kept in upper case: redeemed in any
    credits: Annotated[int, Field(strict=True, ge=1, le=1_000_000), Whole]
    max_redemptions: Annotated[int, Field(strict=True, ge=1, le=10_000_000), Whole]
    valid_until: Moment | None = None  # omitted: no end
    credits_expire_in_days: Annotated[int, Field(strict=True, ge=1, le=3650), Whole] | None = None  # omitted: never
    new_users_only: Annotated[bool, Field(strict=True)] = False  # only for an account that has paid for nothing yet


# A promo code as the admin API shows it: every field the domain keeps (a comment: a docstring would be its schema's).
@public_dataclass(frozen=True)
class PromoPublic(PromoCode):
    @classmethod
    def of(cls, promo: PromoCode) -> PromoPublic:
        return cls(**vars(promo))


@router.post("/promo-codes", response_model=PromoPublic, status_code=201, responses=responses(409))
async def create_promo(body: PromoIn, admin: Promoter, payments: PaymentsDep) -> PromoPublic:
    try:
        return PromoPublic.of(await payments.handle(CreatePromo(**body.model_dump(), admin_id=admin.user_id)))
    except PromoExistsError as exc:
        raise Problem(409, f"Promo code {body.code.upper()} exists.") from exc


@router.get("/promo-codes", response_model=list[PromoPublic])
async def list_promos(_: Promoter, payments: PaymentsDep) -> list[PromoPublic]:
    """Every code, newest first, with how often each was redeemed."""
    return [PromoPublic.of(p) for p in await payments.promos()]


@router.post("/promo-codes/{code}/disable", response_model=PromoPublic, responses=responses(404))
async def disable_promo(code: PromoCodeText, _: Promoter, payments: PaymentsDep) -> PromoPublic:
    """No more redemptions of it (those made keep their credits); disabling it again answers the same."""
    try:
        return PromoPublic.of(await payments.handle(DisablePromo(code=code)))
    except PromoUnavailableError as exc:
        raise Problem(404, f"No promo code {code.upper()}.") from exc
