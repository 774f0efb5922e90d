"""Payments' rules, no framework, no SQL: transactions and how Stripe's word moves them, the packs they buy,
subscriptions and their invoices, and when an auto-recharge buys.

Stripe's webhooks arrive late, twice and out of order, so nothing here follows an event: a transaction follows
what Stripe says its PaymentIntent is now (`PaymentState`), a subscription what Stripe says it and its invoices
are now, and both only ever move forward. Statuses are ranked; an observation that would move a transaction
back (a stale `payment_failed` read after the payment succeeded) changes nothing. So any number of observations,
in any order, leave a transaction where the latest of them puts it, and each outcome is announced once (events.py).
A paid invoice is a SUBSCRIPTION transaction and a renewal, once per invoice; a failed one grants nothing and
makes the subscription PAST_DUE.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.contracts import derive_id
from shared.credits import PACKAGES, CreditPackage, SubscriptionPlan

# -- transactions ---------------------------------------------------------------------------------


class Status(StrEnum):
    PENDING = "PENDING"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    COMPLETED = "COMPLETED"
    REFUNDED = "REFUNDED"


class Kind(StrEnum):
    CREDIT_PURCHASE = "CREDIT_PURCHASE"
    SUBSCRIPTION = "SUBSCRIPTION"
    REFUND = "REFUND"


# Forward only. A failed payment may still succeed (the customer tries another card), a cancelled
# one never could at Stripe, but if Stripe ever says money was taken, the credits are owed.
RANK = {Status.PENDING: 0, Status.FAILED: 1, Status.CANCELLED: 2, Status.COMPLETED: 3, Status.REFUNDED: 4}


@dataclass(frozen=True)
class PaymentState:
    """What Stripe says a PaymentIntent is: read from Stripe, never taken from an event's copy."""

    payment_intent_id: str
    status: str  # Stripe's PaymentIntent status
    amount: int
    currency: str
    transaction_id: str | None = None  # from the metadata payments set when it created the intent
    charge_id: str | None = None
    amount_refunded: int = 0
    refund_id: str | None = None
    failure: str | None = None  # last_payment_error's message
    receipt_url: str | None = None  # the charge's receipt at Stripe

    @property
    def outcome(self) -> Status:
        if self.status == "succeeded":
            return Status.REFUNDED if self.amount_refunded > 0 else Status.COMPLETED
        if self.status == "canceled":
            return Status.CANCELLED
        if self.status == "requires_payment_method" and self.failure:
            return Status.FAILED
        return Status.PENDING  # processing, requires_confirmation, requires_action: not decided yet


@dataclass(frozen=True)
class Transaction:
    id: str
    user_id: str
    kind: Kind
    status: Status
    amount_cents: int
    currency: str
    credits: int
    description: str
    package_id: str | None
    stripe_payment_intent_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    refunded_cents: int = 0  # of amount_cents, given back
    credits_clawed_back: int = 0  # of credits, taken back by that refund

    def refunded_under(self, key: str) -> bool:
        """Whether the refund under idempotency `key` made it REFUNDED (that key's retry answers with it)."""
        return self.status is Status.REFUNDED and self.metadata.get("refund", {}).get("idempotency_key") == key


@dataclass(frozen=True)
class Change:
    """What an observation did: the transaction after it, and which outcomes it announces (in order)."""

    transaction: Transaction
    previous: Status
    announced: tuple[Status, ...] = ()
    refused: str | None = None  # why the observation was not applied at all

    @property
    def changed(self) -> bool:
        return bool(self.announced)


def checkout_purchase(
    tx_id: str, user_id: str, package: CreditPackage, correlation_id: str | None, now: datetime
) -> Transaction:
    """A checkout's PENDING purchase of a pack; the customer pays its PaymentIntent with Stripe.js."""
    metadata: dict[str, Any] = {"correlation_id": correlation_id} if correlation_id else {}
    return _pack_purchase(tx_id, user_id, package, f"{package.name}: {package.credits} credits", metadata, now)


def recharge_purchase(setting: AutoRecharge, crossing: str, now: datetime) -> Transaction:
    """An auto-recharge's purchase of its pack; its id is the crossing's, so a crossing buys once."""
    tx_id = str(uuid.uuid5(uuid.UUID(crossing), "auto-recharge"))
    package = PACKAGES[setting.package_id]
    description = f"Auto-recharge: {package.name}, {package.credits} credits"
    metadata = {"auto_recharge": True, "crossing_event_id": crossing}
    return _pack_purchase(tx_id, setting.user_id, package, description, metadata, now)


def _pack_purchase(
    tx_id: str, user_id: str, package: CreditPackage, description: str, metadata: dict[str, Any], now: datetime
) -> Transaction:
    return Transaction(
        id=tx_id, user_id=user_id, kind=Kind.CREDIT_PURCHASE, status=Status.PENDING, amount_cents=package.price_cents,
        currency=package.currency, credits=package.credits, description=description, package_id=package.id,
        stripe_payment_intent_id=None, metadata=metadata, created_at=now, updated_at=now,
    )  # fmt: skip


def credits_to_claw_back(tx: Transaction, refunded_cents: int) -> int:
    """The credits a refund of `refunded_cents` takes back: all of them for a full refund, else the
    refunded share rounded up (a refund never leaves the customer credits they got their money back for)."""
    if refunded_cents >= tx.amount_cents:
        return tx.credits
    return math.ceil(tx.credits * refunded_cents / tx.amount_cents)


def refund_amount(tx: Transaction, amount_cents: int | None) -> int:
    """The cents a refund of `tx` gives back (all of them, unless a part is asked); raises NotRefundableError."""
    if tx.status is not Status.COMPLETED:
        raise NotRefundableError(f"transaction {tx.id} is {tx.status}, only a COMPLETED payment is refunded")
    amount = tx.amount_cents if amount_cents is None else amount_cents
    if not 0 < amount <= tx.amount_cents:
        raise NotRefundableError(f"a refund is 1 to {tx.amount_cents} cents, not {amount}")
    return amount


def observe(tx: Transaction, state: PaymentState, now: datetime, reason: str | None = None) -> Change:
    """Move `tx` to where Stripe's `state` puts it, if that is forward; say which outcomes that announces."""
    if state.payment_intent_id != tx.stripe_payment_intent_id and tx.stripe_payment_intent_id is not None:
        return Change(tx, tx.status, refused=f"PaymentIntent {state.payment_intent_id} is not this transaction's")
    if (state.amount, state.currency.upper()) != (tx.amount_cents, tx.currency.upper()):
        charged = f"{state.amount} {state.currency}"
        return Change(tx, tx.status, refused=f"Stripe charged {charged}, not {tx.amount_cents} {tx.currency}")
    target = state.outcome
    if RANK[target] <= RANK[tx.status]:
        return Change(tx, tx.status)
    metadata = dict(tx.metadata)
    refunded, clawed_back = tx.refunded_cents, tx.credits_clawed_back
    announced: list[Status] = []
    if target in (Status.COMPLETED, Status.REFUNDED) and RANK[tx.status] < RANK[Status.COMPLETED]:
        announced.append(Status.COMPLETED)  # a refund seen first still means the payment went through
        metadata.pop("failure", None)  # an earlier card's decline: no longer why anything is as it is
    if target is Status.REFUNDED:
        refunded = min(state.amount_refunded, tx.amount_cents)
        clawed_back = credits_to_claw_back(tx, state.amount_refunded)
        metadata["refund"] = {
            "refund_id": state.refund_id,
            "amount_cents": refunded,
            "credits": clawed_back,
            "reason": reason,
            "charge_id": state.charge_id,
        }
        announced.append(Status.REFUNDED)
    elif target is Status.FAILED:
        metadata["failure"] = state.failure
        announced.append(Status.FAILED)
    elif target is Status.CANCELLED:
        announced.append(Status.CANCELLED)
    if state.charge_id:
        metadata["charge_id"] = state.charge_id
    moved = replace(
        tx, status=target, metadata=metadata, updated_at=now, stripe_payment_intent_id=state.payment_intent_id,
        refunded_cents=refunded, credits_clawed_back=clawed_back,
    )  # fmt: skip
    return Change(moved, tx.status, tuple(announced))


# -- subscriptions --------------------------------------------------------------------------------


class SubscriptionStatus(StrEnum):
    INCOMPLETE = "INCOMPLETE"  # created, its first invoice not paid yet
    ACTIVE = "ACTIVE"
    PAST_DUE = "PAST_DUE"  # an invoice failed: nothing granted until one is paid
    CANCELLED = "CANCELLED"


LIVE = (SubscriptionStatus.INCOMPLETE, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE)
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

    @property
    def next_renewal(self) -> datetime | None:
        """None once it ends at the period's end (or has ended)."""
        renews = self.status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE)
        return self.current_period_end if renews and not self.cancel_at_period_end else None

    def is_latest(self, period_end: datetime) -> bool:
        """Whether a period ending then is the current one or later (not an old invoice's, read late)."""
        return self.current_period_end is None or period_end >= self.current_period_end

    def following(self, state: SubscriptionState, now: datetime) -> Subscription:
        """This subscription with Stripe's word on its status (cancelled is final; a live one only moves up
        from INCOMPLETE: invoices say ACTIVE or PAST_DUE), its period and its cancellation."""
        status = FROM_STRIPE.get(state.status, self.status)
        if self.status is SubscriptionStatus.CANCELLED:
            status = SubscriptionStatus.CANCELLED
        elif status is not SubscriptionStatus.CANCELLED and self.status is not SubscriptionStatus.INCOMPLETE:
            status = self.status
        later = self.is_latest(state.period_end)
        unmoved = (status, state.cancel_at_period_end) == (self.status, self.cancel_at_period_end)
        return replace(
            self,
            status=status,
            current_period_start=state.period_start if later else self.current_period_start,
            current_period_end=state.period_end if later else self.current_period_end,
            cancel_at_period_end=state.cancel_at_period_end or self.cancel_at_period_end,
            updated_at=self.updated_at if unmoved else now,
        )

    def renewed_by(self, invoice: InvoiceState, now: datetime) -> Subscription:
        status = self.status if self.status is SubscriptionStatus.CANCELLED else SubscriptionStatus.ACTIVE
        return replace(
            self, status=status, current_period_start=invoice.period_start, current_period_end=invoice.period_end,
            updated_at=now,
        )  # fmt: skip


def invoice_transaction(sub: Subscription, plan: SubscriptionPlan, invoice: InvoiceState, now: datetime) -> Transaction:
    """The SUBSCRIPTION transaction of a paid invoice: its id is the invoice's, so it is recorded once."""
    return Transaction(
        id=str(derive_id("transaction", "invoice", invoice.id)), user_id=sub.user_id, kind=Kind.SUBSCRIPTION,
        status=Status.COMPLETED, amount_cents=invoice.amount_paid, currency=invoice.currency.upper() or plan.currency,
        credits=plan.credits, description=f"{plan.name} subscription: {plan.credits} credits", package_id=None,
        stripe_payment_intent_id=None,
        metadata={
            "subscription_id": sub.id, "plan_id": plan.id, "invoice_id": invoice.id,
            "period_start": invoice.period_start.isoformat(), "period_end": invoice.period_end.isoformat(),
        },
        created_at=now, updated_at=now,
    )  # fmt: skip


# -- auto-recharge ------------------------------------------------------------------------------


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
    monthly_max_recharges: int = 5  # at most so many automatic purchases a calendar month (UTC)


@dataclass(frozen=True)
class RechargesThisMonth:
    cents: int
    count: int
    last_at: datetime | None  # the last automatic purchase, this month or before


def why_not(
    setting: AutoRecharge | None, price_cents: int, done: RechargesThisMonth, now: datetime,
    cooldown: timedelta = RECHARGE_COOLDOWN,
) -> str | None:  # fmt: skip
    """Why a crossing buys nothing (None: buy)."""
    if setting is None or not setting.enabled:
        return "auto-recharge is off"
    if done.count >= setting.monthly_max_recharges:
        return f"the monthly cap of {setting.monthly_max_recharges} recharges is reached"
    if done.cents + price_cents > setting.monthly_cap_cents:
        return f"the monthly cap of {setting.monthly_cap_cents} cents would be passed"
    if done.last_at is not None and now - done.last_at < cooldown:
        seconds = cooldown.total_seconds()
        span = f"{seconds / 60:g} minutes" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"
        return f"the last automatic purchase was less than {span} ago"
    return None


def month_start(now: datetime) -> datetime:
    """Where the calendar month (UTC) of a monthly cap begins."""
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


# -- errors ---------------------------------------------------------------------------------------


# -- promo codes --------------------------------------------------------------------------------------------

PROMO_CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{2,39}$"


def promo_key(code: str) -> str:
    """Codes are case-insensitive: kept, compared and shown in upper case."""
    return code.strip().upper()


@dataclass(frozen=True)
class PromoCode:
    code: str
    credits: int
    max_redemptions: int
    redeemed: int
    valid_until: datetime | None
    credits_expire_in_days: int | None
    new_users_only: bool
    disabled_at: datetime | None
    created_at: datetime
    created_by: str

    def redeemable(self, now: datetime) -> bool:
        return (
            self.disabled_at is None
            and (self.valid_until is None or now < self.valid_until)
            and self.redeemed < self.max_redemptions
        )

    def lot_expiry(self, now: datetime) -> datetime | None:
        return now + timedelta(days=self.credits_expire_in_days) if self.credits_expire_in_days else None


@dataclass(frozen=True)
class Redemption:
    id: str
    code: str
    user_id: str
    credits: int
    expires_at: datetime | None
    redeemed_at: datetime


class PaymentsError(Exception):
    pass


class TransactionNotFoundError(PaymentsError, LookupError):
    pass


class NotRefundableError(PaymentsError):
    pass


class UnknownPackageError(PaymentsError):
    pass


class UnknownPlanError(PaymentsError):
    pass


class NotYetError(PaymentsError):
    """What Stripe reports is ours but not recorded here yet (its command has not committed): retry."""


class NotPendingError(PaymentsError):
    """Only a PENDING checkout is paid with a card; the transaction is in the status named."""


class NoCardError(PaymentsError):
    """A subscription or an off-session purchase needs a saved default card first."""


class AlreadySubscribedError(PaymentsError):
    pass


class SubscriptionNotFoundError(PaymentsError, LookupError):
    pass


class PromoUnavailableError(PaymentsError, LookupError):
    """Unknown, disabled, expired, used up, or for new users only: one answer for all, so a guess learns nothing
    of which codes exist."""


class PromoTakenError(PaymentsError):
    """This account redeemed the code before (under another key)."""

    def __init__(self, redemption: Redemption) -> None:
        super().__init__(f"promo code {redemption.code} was redeemed for this account on {redemption.redeemed_at}")
        self.redemption = redemption


class PromoExistsError(PaymentsError):
    pass
