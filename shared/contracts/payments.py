"""Events on the PAYMENTS stream: transaction outcomes."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from shared.contracts.envelope import EventData


class _Payment(EventData):
    transaction_id: str
    user_id: str
    credits: int = Field(ge=0)
    amount_cents: int = Field(ge=0)
    currency: str
    stripe_payment_intent_id: str | None


class PaymentSucceeded(_Payment):
    type = "payments.payment.succeeded"
    package_id: str | None = None


class PaymentFailed(_Payment):
    type = "payments.payment.failed"
    reason: str | None = None


class PaymentCancelled(_Payment):
    type = "payments.payment.cancelled"


class PaymentRefunded(_Payment):
    type = "payments.payment.refunded"
    stripe_charge_id: str | None = None


class SubscriptionRenewed(EventData):
    type = "payments.subscription.renewed"
    user_id: str
    subscription_id: str
    invoice_id: str
    credits: int = Field(gt=0)
    amount_cents: int = Field(ge=0)
    currency: str
    period_start: datetime
    period_end: datetime
