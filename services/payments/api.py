"""Payments' HTTP API for signed-in users (each acts for the token's user only): the packs and checkout, their
transactions, saved cards, subscriptions and auto-recharge. Routes build commands and map errors; the rules are
the application's."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.dataclasses import dataclass as public_dataclass

from services.payments.application import Payments
from services.payments.commands import (
    CancelSubscription,
    Checkout,
    ConfigureAutoRecharge,
    RedeemPromo,
    SaveCard,
    Subscribe,
    TransactionQuery,
)
from services.payments.domain import (
    PROMO_CODE_PATTERN,
    AlreadySubscribedError,
    Kind,
    NoCardError,
    PromoTakenError,
    PromoUnavailableError,
    Redemption,
    Status,
    Subscription,
    SubscriptionNotFoundError,
    SubscriptionStatus,
    Transaction,
    TransactionNotFoundError,
    UnknownPackageError,
    UnknownPlanError,
)
from services.payments.gateway import CardRefusedError, StripeUnavailableError
from services.payments.receipt import CONTENT_SECURITY_POLICY
from services.payments.receipt import render as render_receipt
from services.payments.stripe_objects import Card
from shared.auth import SignedInUser, ensure_org_admin
from shared.credits import PACKAGES, PLANS, TOPUP, SubscriptionPlan
from shared.guard import GuardedRoute
from shared.idempotency import IdempotencyConflictError
from shared.inputs import MAX_SAFE_INTEGER, ShortText, Whole
from shared.limits import rate_limited
from shared.paging import After, newest_first
from shared.params import CorrelationId, IdempotencyKey, PageCursor
from shared.problems import Problem, responses
from shared.settings import Settings

router = APIRouter(route_class=GuardedRoute)
# What Stripe.js hands the frontend (pm_...): the card itself never reaches us.
PaymentMethodId = Annotated[str, StringConstraints(pattern=r"^pm_[A-Za-z0-9_]{1,120}$")]
OfferId = Annotated[str, StringConstraints(max_length=50, pattern=r"^[a-z0-9_-]+$")]  # a pack's or a plan's
StatusFilter = Annotated[list[Status], Query(alias="status", description="any of these statuses")]
KindFilter = Annotated[list[Kind], Query(alias="type", description="any of these types")]
Limit = Annotated[int, Query(ge=1, le=200)]
NO_CARD = "Save a card first (POST /api/billing/payment-methods)."


async def get_payments(request: Request) -> Payments:
    return request.app.state.payments


PaymentsDep = Annotated[Payments, Depends(get_payments)]


def stripe_problem(exc: StripeUnavailableError) -> Problem:
    return Problem(502, f"Stripe did not complete the request; nothing was charged or changed. {exc}")


def unknown_package(package_id: str) -> Problem:
    return Problem(404, f"No credit package {package_id!r}; see /api/credit-packages.")


# -- packs, checkout and transactions ---------------------------------------------------------------


class CreditPackagePublic(BaseModel):
    id: str
    name: str
    credits: int
    price_cents: int
    currency: str
    popular: bool


# A public shape that is the domain's own, declared once: pydantic's dataclass of the domain's, which documents
# it (its docstring would be the schema's description, so a comment says why it is so).
# A transaction is shown with two fields under the API's names (`type`, and `amount` in cents).
@public_dataclass(frozen=True, kw_only=True)
class TransactionPublic(Transaction):
    kind: Kind = Field(serialization_alias="type")
    amount_cents: int = Field(serialization_alias="amount")

    @classmethod
    def of(cls, tx: Transaction) -> TransactionPublic:
        return cls(**vars(tx))


class TransactionPage(BaseModel):
    transactions: list[TransactionPublic]
    next_cursor: str | None


class PackCheckout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    package_id: ShortText


class TopUpCheckout(BaseModel):
    """A custom top-up: `credits` between the bounds GET /api/credit-packages/top-up shows."""

    model_config = ConfigDict(extra="forbid")

    credits: Annotated[int, Field(strict=True, ge=1, le=MAX_SAFE_INTEGER), Whole]


CheckoutRequest = PackCheckout | TopUpCheckout


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


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def account_of_buyer(principal: SignedInUser) -> str:
    """Whose account the caller buys for and manages billing of: with a token active in an organization, the
    organization's (its admins only: it is the Stripe customer then); else their own."""
    if principal.org is None:
        return principal.user_id
    return ensure_org_admin(principal).account_id


# The account a payments request acts for: the caller's own, or their organization's (see account_of_buyer).
Buyer = Annotated[str, Depends(account_of_buyer)]


@router.get("/api/credit-packages", response_model=list[CreditPackagePublic], tags=["payments"])
async def credit_packages() -> list[CreditPackagePublic]:
    return [CreditPackagePublic(**p.__dict__) for p in PACKAGES.values()]


class TopUpPublic(BaseModel):
    min_credits: int
    max_credits: int
    currency: str
    tiers: list[TopUpTier]  # the price per credit from so many credits on


class TopUpTier(BaseModel):
    from_credits: int
    cents_per_credit: str  # a decimal: the total is rounded half up to a whole cent, once


@router.get("/api/credit-packages/top-up", response_model=TopUpPublic, tags=["payments"])
async def topup_prices(settings: SettingsDep) -> TopUpPublic:
    """What a custom top-up may be and what it costs: `credits` times the price of the largest tier it reaches,
    rounded half up to a cent (137 credits at 19.98 are 2737.26: 2737 cents)."""
    return TopUpPublic(
        min_credits=settings.topup_min_credits, max_credits=settings.topup_max_credits, currency="USD",
        tiers=[TopUpTier(from_credits=n, cents_per_credit=str(c)) for n, c in settings.topup_prices],
    )  # fmt: skip


@router.post(
    "/api/checkout", response_model=CheckoutResponse, status_code=201, tags=["payments"],
    responses=responses(404, 409, 429, 502, 503), dependencies=[rate_limited("checkouts")],
)  # fmt: skip
async def checkout(
    body: CheckoutRequest,
    buyer: Buyer,
    settings: SettingsDep,
    payments: PaymentsDep,
    key: IdempotencyKey,
    correlation_id: CorrelationId = None,
) -> CheckoutResponse:
    """Start buying a pack, or a custom top-up of `credits`: a PENDING transaction and a Stripe PaymentIntent,
    whose client secret the frontend confirms with Stripe.js (card details go to Stripe only). A retry with the
    same key answers the same transaction and PaymentIntent. A top-up outside the bounds is a 422 naming them."""
    credits = body.credits if isinstance(body, TopUpCheckout) else None
    if credits is not None:
        least, most = settings.topup_min_credits, settings.topup_max_credits
        if not least <= credits <= most:
            raise Problem(422, f"A top-up is of {least} to {most} credits, not {credits}.", min=least, max=most)
    package_id = body.package_id if isinstance(body, PackCheckout) else TOPUP
    command = Checkout(user_id=buyer, package_id=package_id, key=key, correlation_id=correlation_id,
                       credits=credits)  # fmt: skip
    try:
        done = await payments.handle(command)
    except UnknownPackageError as exc:
        raise unknown_package(package_id) from exc
    except IdempotencyConflictError as exc:
        raise Problem(409, "This Idempotency-Key was used for a different checkout.") from exc
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc
    tx = done.transaction
    return CheckoutResponse(
        transaction_id=tx.id, client_secret=done.client_secret, amount=tx.amount_cents, currency=tx.currency,
        credits=tx.credits, status=tx.status,
    )  # fmt: skip


async def transaction_page(
    payments: Payments, query: TransactionQuery, cursor: str | None, limit: int
) -> TransactionPage:
    async def fetch(after: After, n: int) -> list[Transaction]:
        return await payments.transactions(query, after, n)

    page, next_cursor = await newest_first(cursor, limit, fetch)
    return TransactionPage(transactions=[TransactionPublic.of(tx) for tx in page], next_cursor=next_cursor)


@router.get("/api/user/transactions", response_model=TransactionPage, tags=["user"], responses=responses(400))
async def my_transactions(
    buyer: Buyer,
    payments: PaymentsDep,
    status: StatusFilter = [],  # noqa: B006  # FastAPI copies defaults per request
    kind: KindFilter = [],  # noqa: B006
    cursor: PageCursor = None,
    limit: Limit = 50,
) -> TransactionPage:
    """The token's user's transactions, newest first (getUserTransactions)."""
    return await transaction_page(payments, TransactionQuery(buyer, tuple(status), tuple(kind)), cursor, limit)


@router.get("/api/user/transactions/stats", response_model=TransactionStats, tags=["user"])
async def my_stats(buyer: Buyer, payments: PaymentsDep) -> TransactionStats:
    """Counts and amounts by status, what was spent and the credits bought (getUserTransactionStats)."""
    rows = await payments.totals(buyer)
    by_status = {Status(r["status"]): StatusTotals(count=int(r["count"]), amount=int(r["amount_cents"])) for r in rows}
    kept = [r for r in rows if r["status"] in (Status.COMPLETED, Status.REFUNDED)]
    return TransactionStats(
        count=sum(int(r["count"]) for r in rows),
        by_status=by_status,
        total_spent=sum(int(r["amount_cents"]) - int(r["refunded_cents"]) for r in kept),
        credits_bought=sum(int(r["credits"]) - int(r["credits_clawed_back"]) for r in kept),
    )


# -- saved cards and subscriptions ------------------------------------------------------------------


class PlanPublic(BaseModel):
    id: str
    name: str
    credits: int
    price_cents: int
    currency: str
    interval: str
    rolls_over: bool

    @classmethod
    def of(cls, plan: SubscriptionPlan) -> PlanPublic:
        return cls(**plan.__dict__)


@public_dataclass(frozen=True)  # a saved card as payments holds it: brand, last 4 digits and expiry, never more
class CardPublic(Card):
    @classmethod
    def of(cls, card: Card) -> CardPublic:
        return cls(**vars(card))


class SaveCardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_method: PaymentMethodId


class SubscribeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan_id: OfferId


class SubscriptionPublic(BaseModel):
    id: str
    plan: PlanPublic
    status: SubscriptionStatus
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    next_renewal: datetime | None  # None once it ends at the period's end
    created_at: datetime

    @classmethod
    def of(cls, sub: Subscription) -> SubscriptionPublic:
        return cls(
            id=sub.id, plan=PlanPublic.of(PLANS[sub.plan_id]), status=sub.status,
            current_period_start=sub.current_period_start, current_period_end=sub.current_period_end,
            cancel_at_period_end=sub.cancel_at_period_end, next_renewal=sub.next_renewal, created_at=sub.created_at,
        )  # fmt: skip


class CurrentSubscription(BaseModel):
    subscription: SubscriptionPublic | None


@router.get("/api/subscription-plans", response_model=list[PlanPublic], tags=["billing"])
async def subscription_plans() -> list[PlanPublic]:
    return [PlanPublic.of(p) for p in PLANS.values()]


@router.post(
    "/api/billing/payment-methods", response_model=list[CardPublic], status_code=201, tags=["billing"],
    responses=responses(402, 502),
)  # fmt: skip
async def save_card(body: SaveCardRequest, buyer: Buyer, payments: PaymentsDep) -> list[CardPublic]:
    """Save a card made client-side with Stripe.js (its pm_ id) as the user's default; answers their cards."""
    try:
        cards = await payments.handle(SaveCard(user_id=buyer, payment_method=body.payment_method))
    except CardRefusedError as exc:
        raise Problem(402, f"The card was not saved: {exc}") from exc
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc
    return [CardPublic.of(c) for c in cards]


@router.get("/api/billing/payment-methods", response_model=list[CardPublic], tags=["billing"], responses=responses(502))
async def my_cards(buyer: Buyer, payments: PaymentsDep) -> list[CardPublic]:
    """The user's saved cards: brand, last 4 digits and expiry, never more."""
    try:
        return [CardPublic.of(c) for c in await payments.cards(buyer)]
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc


@router.post(
    "/api/subscriptions", response_model=SubscriptionPublic, status_code=201, tags=["billing"],
    responses=responses(404, 409, 429, 502), dependencies=[rate_limited("checkouts")],
)  # fmt: skip
async def subscribe(
    body: SubscribeRequest, buyer: Buyer, payments: PaymentsDep, key: IdempotencyKey
) -> SubscriptionPublic:
    """Subscribe to a plan, paid with the default card. Credits come with each paid invoice."""
    try:
        sub = await payments.handle(Subscribe(user_id=buyer, plan_id=body.plan_id, key=key))
    except UnknownPlanError as exc:
        raise Problem(404, f"No plan {body.plan_id!r}; see /api/subscription-plans.") from exc
    except NoCardError as exc:
        raise Problem(409, NO_CARD) from exc
    except AlreadySubscribedError as exc:
        raise Problem(409, "You already have a subscription; cancel it first.") from exc
    except IdempotencyConflictError as exc:
        raise Problem(409, "This Idempotency-Key was used for a different subscription.") from exc
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc
    return SubscriptionPublic.of(sub)


@router.delete(
    "/api/subscriptions/{subscription_id}", response_model=SubscriptionPublic, tags=["billing"],
    responses=responses(404, 502),
)  # fmt: skip
async def cancel(subscription_id: uuid.UUID, buyer: Buyer, payments: PaymentsDep) -> SubscriptionPublic:
    """Cancel at the end of the paid period (its credits stay until they expire). Repeating it changes nothing."""
    try:
        sub = await payments.handle(CancelSubscription(user_id=buyer, subscription_id=str(subscription_id)))
    except SubscriptionNotFoundError as exc:
        raise Problem(404, f"You have no subscription {subscription_id}.") from exc
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc
    return SubscriptionPublic.of(sub)


@router.get("/api/user/subscription", response_model=CurrentSubscription, tags=["billing", "user"])
async def my_subscription(buyer: Buyer, payments: PaymentsDep) -> CurrentSubscription:
    """The user's live subscription (else their latest): plan, status, current period, next renewal."""
    sub = await payments.current_subscription(buyer)
    return CurrentSubscription(subscription=SubscriptionPublic.of(sub) if sub else None)


# -- auto-recharge ----------------------------------------------------------------------------------


class AutoRechargeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool
    threshold: Annotated[int, Field(strict=True, ge=1, le=1_000_000), Whole]
    package_id: OfferId
    monthly_cap_cents: Annotated[int, Field(strict=True, ge=0, le=10_000_000), Whole]
    # At most so many automatic purchases a calendar month (UTC), whatever they cost.
    monthly_max_recharges: Annotated[int, Field(strict=True, ge=0, le=1000), Whole] = 5


class AutoRechargePublic(BaseModel):
    enabled: bool
    threshold: int
    package_id: str
    monthly_cap_cents: int
    monthly_max_recharges: int
    spent_this_month_cents: int
    recharges_this_month: int
    disabled_reason: str | None  # why it turned itself off, for the frontend to tell the user
    updated_at: datetime | None


@router.put(
    "/api/billing/auto-recharge", response_model=AutoRechargePublic, tags=["billing"],
    responses=responses(404, 409, 502),
)  # fmt: skip
async def set_auto_recharge(body: AutoRechargeRequest, buyer: Buyer, payments: PaymentsDep) -> AutoRechargePublic:
    """Buy `package_id` off-session with the default card whenever available credit crosses below
    `threshold`: once per crossing, at most `monthly_cap_cents` a month, at most every 5 minutes."""
    try:
        await payments.handle(ConfigureAutoRecharge(user_id=buyer, **body.model_dump()))
    except UnknownPackageError as exc:
        raise unknown_package(body.package_id) from exc
    except NoCardError as exc:
        raise Problem(409, NO_CARD) from exc
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc
    return await my_auto_recharge(buyer, payments)


@router.get("/api/billing/auto-recharge", response_model=AutoRechargePublic, tags=["billing"])
async def my_auto_recharge(buyer: Buyer, payments: PaymentsDep) -> AutoRechargePublic:
    setting, done = await payments.auto_recharge(buyer)
    if setting is None:
        return AutoRechargePublic(
            enabled=False, threshold=5, package_id="basic", monthly_cap_cents=0, monthly_max_recharges=5,
            spent_this_month_cents=done.cents, recharges_this_month=done.count, disabled_reason=None, updated_at=None,
        )  # fmt: skip
    fields: dict[str, Any] = {k: v for k, v in setting.__dict__.items() if k != "user_id"}
    return AutoRechargePublic(**fields, spent_this_month_cents=done.cents, recharges_this_month=done.count)


# -- promo codes ------------------------------------------------------------------------------------------------

PromoCodeText = Annotated[str, StringConstraints(pattern=PROMO_CODE_PATTERN)]


class RedeemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: PromoCodeText  # any case


class RedemptionPublic(BaseModel):
    id: str
    code: str
    credits: int
    expires_at: datetime | None  # when the unspent part of these credits expires; null: never
    redeemed_at: datetime

    @classmethod
    def of(cls, redemption: Redemption) -> RedemptionPublic:
        return cls(**{k: v for k, v in vars(redemption).items() if k != "user_id"})


@router.post(
    "/api/user/promo-codes/redeem", response_model=RedemptionPublic, status_code=201, tags=["payments"],
    responses=responses(404, 409, 429), dependencies=[rate_limited("promo-redemptions")],
)  # fmt: skip
async def redeem_promo(
    body: RedeemRequest, buyer: Buyer, payments: PaymentsDep, key: IdempotencyKey
) -> RedemptionPublic:
    """Redeem a promo code: its credits as a BONUS lot (expiring when the code says). Once per account (409 the
    second time, whatever the key); a retry under the same key answers the same redemption. An unknown, disabled,
    expired or used-up code is one 404. With a token active in an organization, its admins redeem for it."""
    try:
        redemption = await payments.handle(RedeemPromo(user_id=buyer, code=body.code, key=key))
    except PromoUnavailableError as exc:
        raise Problem(404, "Unknown or no longer valid promo code.") from exc
    except PromoTakenError as exc:
        raise Problem(409, f"Promo code {exc.redemption.code} was redeemed for this account before.",
                      redeemed_at=exc.redemption.redeemed_at.isoformat()) from exc  # fmt: skip
    except IdempotencyConflictError as exc:
        raise Problem(409, "This Idempotency-Key was used for a different request.") from exc
    return RedemptionPublic.of(redemption)


@router.get(
    "/api/user/transactions/{transaction_id}/receipt", tags=["user"], response_class=HTMLResponse,
    responses={**responses(404), 200: {"content": {"text/html": {}}, "description": "a printable receipt"}},
)  # fmt: skip
async def receipt(transaction_id: uuid.UUID, buyer: Buyer, payments: PaymentsDep) -> HTMLResponse:
    """A printable receipt of one of your transactions (HTML): the line items, amount, currency, date and the
    credits granted; a refund shown beside what it gave back; Stripe's own receipt linked when Stripe has one."""
    try:
        tx = await payments.transaction(str(transaction_id))
    except TransactionNotFoundError as exc:
        raise Problem(404, f"You have no transaction {transaction_id}.") from exc
    if tx.user_id != buyer:
        raise Problem(404, f"You have no transaction {transaction_id}.")
    receipt_url = await payments.receipt_url(tx)
    return HTMLResponse(
        render_receipt(tx, receipt_url=receipt_url),
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "private, no-store"},
    )
