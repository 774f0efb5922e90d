"""What callers ask of payments: commands as typed data, each naming the type of its answer, and the query of
transactions. Routes and handlers only build these; `Payments.handle` runs a command through its use case
(application.COMMAND_HANDLERS) and answers with that type."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from services.payments.domain import (
    AutoRecharge,
    Kind,
    PaymentState,
    PromoCode,
    Redemption,
    Status,
    Subscription,
    Transaction,
)
from services.payments.stripe_objects import Card

Answer = TypeVar("Answer")


class Command(Generic[Answer]):
    """Something asked of payments, answered with an `Answer`."""


# -- buying and refunds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StartedCheckout:
    transaction: Transaction
    client_secret: str


@dataclass(frozen=True, kw_only=True)
class Checkout(Command[StartedCheckout]):
    """A PENDING purchase of a pack and its PaymentIntent; a retry under `key` gets the same two back."""

    user_id: str
    package_id: str  # a pack's, or shared.credits.TOPUP for a custom amount
    key: str
    correlation_id: str | None = None
    credits: int | None = None  # a custom top-up's, priced by the price table


@dataclass(frozen=True, kw_only=True)
class PayWithTestCard(Command[PaymentState]):
    """Pay a PENDING checkout at a fake Stripe with a test card, as Stripe.js would (development only)."""

    user_id: str
    transaction_id: str
    card_number: str


@dataclass(frozen=True, kw_only=True)
class Refund(Command[Transaction]):
    """Refund a COMPLETED payment at Stripe, all of it or `amount_cents`; a retry under `key` answers the same."""

    transaction_id: str
    reason: str
    amount_cents: int | None
    key: str
    admin_id: str


# -- what Stripe says -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReceiveStripeEvent(Command[bool]):
    """A verified webhook delivery, into the inbox for the worker; answered False when it came before."""

    event_id: str
    kind: str
    object_id: str | None  # the PaymentIntent, invoice or subscription to read back; None: nothing to act on


@dataclass(frozen=True)
class Repair:
    transaction_id: str
    payment_intent_id: str
    before: Status
    after: Status
    announced: tuple[Status, ...]


@dataclass
class Reconciliation:
    since: datetime
    events_listed: int = 0
    events_recovered: list[str] = field(default_factory=list)  # sent by Stripe, never received
    intents_checked: int = 0
    repaired: list[Repair] = field(default_factory=list)
    unknown_intents: list[str] = field(default_factory=list)  # at Stripe, naming no transaction of ours
    refused: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Reconcile(Command[Reconciliation]):
    """Compare Stripe with our transactions since `since` and repair what a missed webhook left."""

    since: datetime | None = None  # None: the last 24 hours


# -- cards, subscriptions, auto-recharge ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SaveCard(Command[list[Card]]):
    """Make a card made client-side with Stripe.js (its pm_ id) the user's default; answered with their cards."""

    user_id: str
    payment_method: str


@dataclass(frozen=True, kw_only=True)
class Subscribe(Command[Subscription]):
    """Subscribe to a plan, paid with the default card; a retry under `key` answers the same."""

    user_id: str
    plan_id: str
    key: str


@dataclass(frozen=True, kw_only=True)
class CancelSubscription(Command[Subscription]):
    """Cancel at the period's end: the credits of the paid period stay until they expire."""

    user_id: str
    subscription_id: str


@dataclass(frozen=True, kw_only=True)
class ConfigureAutoRecharge(Command[AutoRecharge]):
    """Buy `package_id` off-session whenever available credit crosses below `threshold`; on needs a card."""

    user_id: str
    enabled: bool
    threshold: int
    package_id: str
    monthly_cap_cents: int
    monthly_max_recharges: int = 5


@dataclass(frozen=True, kw_only=True)
class Recharge(Command[None]):
    """The ledger saw the user's available credit cross below their threshold (the event `crossing`)."""

    user_id: str
    crossing: str


# -- promo codes ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CreatePromo(Command[PromoCode]):
    code: str
    credits: int
    max_redemptions: int
    valid_until: datetime | None
    credits_expire_in_days: int | None
    new_users_only: bool
    admin_id: str


@dataclass(frozen=True, kw_only=True)
class DisablePromo(Command[PromoCode]):
    code: str


@dataclass(frozen=True, kw_only=True)
class RedeemPromo(Command[Redemption]):
    """Redeem a code for an account: once per account, never past the code's maximum; a retry under `key`
    answers the first redemption."""

    user_id: str
    code: str
    key: str


# -- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransactionQuery:
    """Which transactions, newest first: one user's (None: everyone's), of any of these statuses and kinds."""

    user_id: str | None
    statuses: tuple[Status, ...] = ()
    kinds: tuple[Kind, ...] = ()
