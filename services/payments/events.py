"""What payments announces (shared/contracts/payments.py), built from its domain; no framework, no SQL.

An outcome's event id is derived from what it is about (the transaction and the outcome, the invoice, the
subscription), so however many paths reach the same outcome (webhooks, their redeliveries, a refund's answer,
reconciliation) it is one event: a duplicate in the outbox's relay and in every consumer."""

from __future__ import annotations

from services.payments.domain import AutoRecharge, InvoiceState, Redemption, Status, Subscription, Transaction
from shared.contracts import Envelope, EventData, derive_id
from shared.contracts import payments as pc
from shared.credits import PACKAGES, SubscriptionPlan


def payment(tx: Transaction, status: Status) -> Envelope:
    """A transaction's outcome, in the trace of the checkout that started it."""
    common = {
        "transaction_id": tx.id,
        "user_id": tx.user_id,
        "currency": tx.currency,
        "stripe_payment_intent_id": tx.stripe_payment_intent_id,
    }
    body: EventData
    match status:
        case Status.COMPLETED:
            body = pc.PaymentSucceeded(**common, credits=tx.credits, amount_cents=tx.amount_cents,
                                       package_id=tx.package_id)  # fmt: skip
        case Status.FAILED:
            body = pc.PaymentFailed(**common, credits=tx.credits, amount_cents=tx.amount_cents,
                                    reason=tx.metadata.get("failure"))  # fmt: skip
        case Status.CANCELLED:
            body = pc.PaymentCancelled(**common, credits=tx.credits, amount_cents=tx.amount_cents)
        case Status.REFUNDED:
            body = pc.PaymentRefunded(**common, refunded_cents=tx.refunded_cents,
                                      credits_clawed_back=tx.credits_clawed_back,
                                      stripe_charge_id=tx.metadata["refund"].get("charge_id"))  # fmt: skip
        case _:
            raise ValueError(f"nothing is announced for {status}")
    correlation = tx.metadata.get("correlation_id") or f"transaction:{tx.id}"
    event_id = derive_id("payments", tx.id, status)
    return Envelope.wrap(body, user_id=tx.user_id, correlation_id=correlation, event_id=event_id)


def renewed(sub: Subscription, plan: SubscriptionPlan, invoice: InvoiceState, tx: Transaction) -> Envelope:
    """A paid invoice: the period's credits for the ledger to grant."""
    body = pc.SubscriptionRenewed(
        user_id=sub.user_id, subscription_id=sub.id, invoice_id=invoice.id, credits=plan.credits,
        amount_cents=invoice.amount_paid, currency=tx.currency, period_start=invoice.period_start,
        period_end=invoice.period_end, rolls_over=plan.rolls_over, plan_id=sub.plan_id, transaction_id=tx.id,
    )  # fmt: skip
    return Envelope.wrap(body, user_id=sub.user_id, event_id=derive_id("payments", "invoice", invoice.id, "paid"))


def past_due(sub: Subscription, invoice: InvoiceState) -> Envelope:
    body = pc.SubscriptionPastDue(
        user_id=sub.user_id, subscription_id=sub.id, invoice_id=invoice.id, plan_id=sub.plan_id
    )
    return Envelope.wrap(body, user_id=sub.user_id, event_id=derive_id("payments", "invoice", invoice.id, "past_due"))


def cancelled(sub: Subscription) -> Envelope:
    body = pc.SubscriptionCancelled(user_id=sub.user_id, subscription_id=sub.id, plan_id=sub.plan_id)
    return Envelope.wrap(body, user_id=sub.user_id, event_id=derive_id("payments", "subscription", sub.id, "cancelled"))


def recharge_configured(setting: AutoRecharge) -> Envelope:
    """Where the ledger should watch the user's available credit (no threshold: auto-recharge is off)."""
    threshold = setting.threshold if setting.enabled else None
    body = pc.AutoRechargeConfigured(user_id=setting.user_id, threshold=threshold, at=setting.updated_at)
    return Envelope.wrap(body, user_id=setting.user_id)


def recharged(setting: AutoRecharge, tx: Transaction, crossing: str) -> Envelope:
    package = PACKAGES[setting.package_id]
    body = pc.AutoRechargeSucceeded(
        user_id=setting.user_id, transaction_id=tx.id, package_id=package.id, credits=package.credits,
        amount_cents=package.price_cents,
    )  # fmt: skip
    return Envelope.wrap(body, user_id=setting.user_id, causation_id=crossing)


def recharge_failed(setting: AutoRecharge, reason: str, *, disabled: bool) -> Envelope:
    body = pc.AutoRechargeFailed(
        user_id=setting.user_id, package_id=setting.package_id, reason=reason, disabled=disabled
    )
    return Envelope.wrap(body, user_id=setting.user_id)


def promo_redeemed(redemption: Redemption) -> Envelope:
    body = pc.PromoRedeemed(
        user_id=redemption.user_id, redemption_id=redemption.id, code=redemption.code, credits=redemption.credits,
        expires_at=redemption.expires_at,
    )  # fmt: skip
    return Envelope.wrap(body, user_id=redemption.user_id, event_id=derive_id("promo", redemption.id),
                         correlation_id=f"promo:{redemption.id}")  # fmt: skip
