"""Payments' HTTP API for saved cards and subscriptions (the token's user's own)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.payments.api import stripe_problem
from services.payments.billing import (
    AlreadySubscribedError,
    AutoRecharge,
    Card,
    CardRefusedError,
    NoCardError,
    Subscription,
    SubscriptionNotFoundError,
    SubscriptionStatus,
)
from services.payments.domain import StripeUnavailableError
from services.payments.subscriptions import Billing
from shared.auth import SignedInUser
from shared.credits import PACKAGES, PLANS, SubscriptionPlan
from shared.guard import GuardedRoute
from shared.idempotency import IdempotencyConflictError
from shared.inputs import Whole
from shared.params import IdempotencyKey
from shared.problems import Problem, responses

router = APIRouter(route_class=GuardedRoute, tags=["billing"])


async def get_billing(request: Request) -> Billing:
    return request.app.state.payments.billing


BillingDep = Annotated[Billing, Depends(get_billing)]
# What Stripe.js hands the frontend (pm_...): the card itself never reaches us.
PaymentMethodId = Annotated[str, StringConstraints(pattern=r"^pm_[A-Za-z0-9_]{1,120}$")]


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


class CardPublic(BaseModel):
    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    default: bool

    @classmethod
    def of(cls, card: Card) -> CardPublic:
        return cls(**card.__dict__)


class SaveCardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_method: PaymentMethodId


class SubscribeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan_id: Annotated[str, StringConstraints(max_length=50, pattern=r"^[a-z0-9_-]+$")]


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
        renews = sub.status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE) and not sub.cancel_at_period_end
        return cls(
            id=sub.id, plan=PlanPublic.of(PLANS[sub.plan_id]), status=sub.status,
            current_period_start=sub.current_period_start, current_period_end=sub.current_period_end,
            cancel_at_period_end=sub.cancel_at_period_end, next_renewal=sub.current_period_end if renews else None,
            created_at=sub.created_at,
        )  # fmt: skip


class CurrentSubscription(BaseModel):
    subscription: SubscriptionPublic | None


@router.get("/api/subscription-plans", response_model=list[PlanPublic])
async def subscription_plans() -> list[PlanPublic]:
    return [PlanPublic.of(p) for p in PLANS.values()]


@router.post(
    "/api/billing/payment-methods", response_model=list[CardPublic], status_code=201, responses=responses(402, 502)
)
async def save_card(body: SaveCardRequest, principal: SignedInUser, billing: BillingDep) -> list[CardPublic]:
    """Save a card made client-side with Stripe.js (its pm_ id) as the user's default; answers their cards."""
    try:
        return [CardPublic.of(c) for c in await billing.save_card(principal.user_id, body.payment_method)]
    except CardRefusedError as exc:
        raise Problem(402, f"The card was not saved: {exc}") from exc
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc


@router.get("/api/billing/payment-methods", response_model=list[CardPublic], responses=responses(502))
async def my_cards(principal: SignedInUser, billing: BillingDep) -> list[CardPublic]:
    """The user's saved cards: brand, last 4 digits and expiry, never more."""
    try:
        return [CardPublic.of(c) for c in await billing.cards(principal.user_id)]
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc


@router.post(
    "/api/subscriptions", response_model=SubscriptionPublic, status_code=201, responses=responses(404, 409, 502)
)
async def subscribe(
    body: SubscribeRequest, principal: SignedInUser, billing: BillingDep, key: IdempotencyKey
) -> SubscriptionPublic:
    """Subscribe to a plan, paid with the default card. Credits come with each paid invoice."""
    if body.plan_id not in PLANS:
        raise Problem(404, f"No plan {body.plan_id!r}; see /api/subscription-plans.")
    try:
        return SubscriptionPublic.of(await billing.subscribe(principal.user_id, body.plan_id, key))
    except NoCardError as exc:
        raise Problem(409, "Save a card first (POST /api/billing/payment-methods).") from exc
    except AlreadySubscribedError as exc:
        raise Problem(409, "You already have a subscription; cancel it first.") from exc
    except IdempotencyConflictError as exc:
        raise Problem(409, "This Idempotency-Key was used for a different subscription.") from exc
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc


@router.delete("/api/subscriptions/{subscription_id}", response_model=SubscriptionPublic, responses=responses(404, 502))
async def cancel(subscription_id: uuid.UUID, principal: SignedInUser, billing: BillingDep) -> SubscriptionPublic:
    """Cancel at the end of the paid period (its credits stay until they expire). Repeating it changes nothing."""
    try:
        return SubscriptionPublic.of(await billing.cancel(principal.user_id, str(subscription_id)))
    except SubscriptionNotFoundError as exc:
        raise Problem(404, f"You have no subscription {subscription_id}.") from exc
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc


@router.get("/api/user/subscription", response_model=CurrentSubscription, tags=["user"])
async def my_subscription(principal: SignedInUser, billing: BillingDep) -> CurrentSubscription:
    """The user's live subscription (else their latest): plan, status, current period, next renewal."""
    sub = await billing.current(principal.user_id)
    return CurrentSubscription(subscription=SubscriptionPublic.of(sub) if sub else None)


class AutoRechargeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool
    threshold: Annotated[int, Field(strict=True, ge=1, le=1_000_000), Whole]
    package_id: Annotated[str, StringConstraints(max_length=50, pattern=r"^[a-z0-9_-]+$")]
    monthly_cap_cents: Annotated[int, Field(strict=True, ge=0, le=10_000_000), Whole]


class AutoRechargePublic(BaseModel):
    enabled: bool
    threshold: int
    package_id: str
    monthly_cap_cents: int
    spent_this_month_cents: int
    disabled_reason: str | None  # why it turned itself off, for the frontend to tell the user
    updated_at: datetime | None


@router.put("/api/billing/auto-recharge", response_model=AutoRechargePublic, responses=responses(404, 409, 502))
async def set_auto_recharge(
    body: AutoRechargeRequest, principal: SignedInUser, billing: BillingDep
) -> AutoRechargePublic:
    """Buy `package_id` off-session with the default card whenever available credit crosses below
    `threshold`: once per crossing, at most `monthly_cap_cents` a month, at most every 5 minutes."""
    if body.package_id not in PACKAGES:
        raise Problem(404, f"No credit package {body.package_id!r}; see /api/credit-packages.")
    setting = AutoRecharge(
        user_id=principal.user_id, enabled=body.enabled, threshold=body.threshold, package_id=body.package_id,
        monthly_cap_cents=body.monthly_cap_cents, disabled_reason=None, updated_at=datetime.now(UTC),
    )  # fmt: skip
    try:
        await billing.set_auto_recharge(setting)
    except NoCardError as exc:
        raise Problem(409, "Save a card first (POST /api/billing/payment-methods).") from exc
    except StripeUnavailableError as exc:
        raise stripe_problem(exc) from exc
    return await my_auto_recharge(principal, billing)


@router.get("/api/billing/auto-recharge", response_model=AutoRechargePublic)
async def my_auto_recharge(principal: SignedInUser, billing: BillingDep) -> AutoRechargePublic:
    setting, spent = await billing.auto_recharge(principal.user_id)
    if setting is None:
        return AutoRechargePublic(
            enabled=False, threshold=5, package_id="basic", monthly_cap_cents=0, spent_this_month_cents=spent,
            disabled_reason=None, updated_at=None,
        )  # fmt: skip
    fields = {k: v for k, v in setting.__dict__.items() if k != "user_id"}
    return AutoRechargePublic(**fields, spent_this_month_cents=spent)
