"""Subscriptions and saved cards, as payments knows them; no framework, no SQL.

Like a payment, a subscription follows what Stripe says (its invoices and its own state), read from
Stripe whenever an event names one. A paid invoice is a SUBSCRIPTION transaction and a renewal, once
per invoice; a failed one grants nothing and makes the subscription PAST_DUE."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class SubscriptionStatus(StrEnum):
    INCOMPLETE = "INCOMPLETE"  # created, its first invoice not paid yet
    ACTIVE = "ACTIVE"
    PAST_DUE = "PAST_DUE"  # an invoice failed: nothing granted until one is paid
    CANCELLED = "CANCELLED"


# Stripe's subscription statuses, as ours.
FROM_STRIPE = {
    "incomplete": SubscriptionStatus.INCOMPLETE,
    "trialing": SubscriptionStatus.ACTIVE,
    "active": SubscriptionStatus.ACTIVE,
    "past_due": SubscriptionStatus.PAST_DUE,
    "unpaid": SubscriptionStatus.PAST_DUE,
    "canceled": SubscriptionStatus.CANCELLED,
    "incomplete_expired": SubscriptionStatus.CANCELLED,
}


@dataclass(frozen=True)
class Subscription:
    id: str
    user_id: str
    plan_id: str
    status: SubscriptionStatus
    stripe_subscription_id: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class SubscriptionState:
    """What Stripe says a subscription is now."""

    id: str
    status: str
    period_start: datetime
    period_end: datetime
    cancel_at_period_end: bool
    ours: str | None = None  # our subscription id, from the metadata payments set when it subscribed


@dataclass(frozen=True)
class InvoiceState:
    """What Stripe says an invoice of a subscription is now."""

    id: str
    subscription_id: str | None  # Stripe's
    status: str  # draft, open, paid, void, uncollectible
    amount_paid: int
    currency: str
    period_start: datetime  # of the period it pays for (its subscription line's)
    period_end: datetime
    attempted: bool


@dataclass(frozen=True)
class Card:
    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    default: bool


class NoCardError(Exception):
    """A subscription or an off-session purchase needs a saved default card first."""


class CardRefusedError(Exception):
    """Stripe refused the card (declined when attached, or not a card of this customer)."""


class AlreadySubscribedError(Exception):
    pass


class SubscriptionNotFoundError(LookupError):
    pass


# Between two automatic purchases for one user, however many crossings come.
RECHARGE_COOLDOWN = timedelta(minutes=5)


@dataclass(frozen=True)
class AutoRecharge:
    """A user's auto-recharge: buy `package_id` off-session when available credit crosses below
    `threshold`, at most `monthly_cap_cents` a calendar month (UTC)."""

    user_id: str
    enabled: bool
    threshold: int
    package_id: str
    monthly_cap_cents: int
    disabled_reason: str | None  # why it turned itself off (a card that needs the customer, a decline)
    updated_at: datetime


def why_not(
    setting: AutoRecharge | None, price_cents: int, spent_this_month: int, last_at: datetime | None, now: datetime
) -> str | None:
    """Why a crossing buys nothing (None: buy)."""
    if setting is None or not setting.enabled:
        return "auto-recharge is off"
    if spent_this_month + price_cents > setting.monthly_cap_cents:
        return f"the monthly cap of {setting.monthly_cap_cents} cents would be passed"
    if last_at is not None and now - last_at < RECHARGE_COOLDOWN:
        return "the last automatic purchase was less than 5 minutes ago"
    return None
