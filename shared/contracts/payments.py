"""Events on the PAYMENTS stream: transaction outcomes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from shared.contracts.envelope import EventData
from shared.inputs import MediumText, ShortText


class _Transaction(EventData):
    transaction_id: ShortText
    user_id: ShortText
    currency: ShortText
    stripe_payment_intent_id: ShortText | None


class _Payment(_Transaction):
    """A payment's outcome, with what was paid and the credits it buys."""

    credits: int = Field(ge=0)
    amount_cents: int = Field(ge=0)


def _refund_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 said the refund's amounts in the payment's own fields."""
    data["refunded_cents"] = data.pop("amount_cents")
    data["credits_clawed_back"] = data.pop("credits")
    return data


class PaymentSucceeded(_Payment):
    type = "payments.payment.succeeded"
    package_id: ShortText | None = None


class PaymentFailed(_Payment):
    type = "payments.payment.failed"
    reason: MediumText | None = None


class PaymentCancelled(_Payment):
    type = "payments.payment.cancelled"


class PaymentRefunded(_Transaction):
    """Money given back for a payment, and the credits that takes back. Version 1 put these in `amount_cents`
    and `credits`, which every other payment event uses for the payment itself."""

    type = "payments.payment.refunded"
    schema_version = 2
    upcasts = {1: _refund_v1_to_v2}
    refunded_cents: int = Field(ge=0)
    credits_clawed_back: int = Field(ge=0)
    stripe_charge_id: ShortText | None = None


class _Invoice(EventData):
    """What happened to one invoice of a user's subscription."""

    user_id: ShortText
    subscription_id: ShortText
    invoice_id: ShortText


class SubscriptionRenewed(_Invoice):
    type = "payments.subscription.renewed"
    credits: int = Field(gt=0)
    amount_cents: int = Field(ge=0)
    currency: ShortText
    period_start: datetime
    period_end: datetime
    # Whether the period's credits outlive it (the plan says so); else they expire at period_end.
    rolls_over: bool = False
    # The plan, and payments' transaction of the invoice (older events lack them).
    plan_id: ShortText | None = None
    transaction_id: ShortText | None = None


class SubscriptionPastDue(_Invoice):
    """An invoice of the subscription failed: nothing is granted until one is paid."""

    type = "payments.subscription.past_due"
    plan_id: ShortText


class SubscriptionCancelled(EventData):
    type = "payments.subscription.cancelled"
    user_id: ShortText
    subscription_id: ShortText
    plan_id: ShortText


class AutoRechargeSucceeded(EventData):
    """A pack bought off-session because available credit crossed below the user's threshold."""

    type = "payments.autorecharge.succeeded"
    user_id: ShortText
    transaction_id: ShortText
    package_id: ShortText
    credits: int = Field(gt=0)
    amount_cents: int = Field(ge=0)


class AutoRechargeFailed(EventData):
    """A crossing bought nothing: the card was refused or needs the customer (auto-recharge turned
    off: `disabled`), or the monthly cap would be passed."""

    type = "payments.autorecharge.failed"
    user_id: ShortText
    package_id: ShortText
    reason: MediumText
    disabled: bool


class AutoRechargeConfigured(EventData):
    """A user's auto-recharge threshold as the ledger should watch it (None: off)."""

    type = "payments.autorecharge.configured"
    user_id: ShortText
    threshold: int | None = Field(default=None, ge=1)
    at: datetime


class PromoRedeemed(EventData):
    """A promo code redeemed for an account: the ledger grants its credits as a BONUS lot, once per code and
    account (the account's own: a user's, or an organization's)."""

    type = "payments.promo.redeemed"
    user_id: ShortText
    redemption_id: ShortText
    code: ShortText  # as stored: upper case
    credits: int = Field(gt=0)
    expires_at: datetime | None = None  # when the lot's unspent credits expire; None: never
