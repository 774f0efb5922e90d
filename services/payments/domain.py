"""Transactions as payments knows them, and how Stripe's word moves them; no framework, no SQL.

Stripe's webhooks arrive late, twice and out of order, so a transaction never follows an event: it
follows what Stripe says the PaymentIntent is now (`PaymentState`), and only ever moves forward.
Statuses are ranked; an observation that would move a transaction back (a stale `payment_failed`
read after the payment succeeded) changes nothing. So any number of observations, in any order,
leave the transaction where the latest of them puts it, and each outcome is announced once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any


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

    @property
    def refunded_cents(self) -> int:
        return int(self.metadata.get("refund", {}).get("amount_cents", 0))

    @property
    def credits_clawed_back(self) -> int:
        return int(self.metadata.get("refund", {}).get("credits", 0))


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


def credits_to_claw_back(tx: Transaction, refunded_cents: int) -> int:
    """The credits a refund of `refunded_cents` takes back: all of them for a full refund, else the
    refunded share rounded up (a refund never leaves the customer credits they got their money back for)."""
    if refunded_cents >= tx.amount_cents:
        return tx.credits
    return math.ceil(tx.credits * refunded_cents / tx.amount_cents)


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
    announced: list[Status] = []
    if target in (Status.COMPLETED, Status.REFUNDED) and RANK[tx.status] < RANK[Status.COMPLETED]:
        announced.append(Status.COMPLETED)  # a refund seen first still means the payment went through
        metadata.pop("failure", None)  # an earlier card's decline: no longer why anything is as it is
    if target is Status.REFUNDED:
        metadata["refund"] = {
            "refund_id": state.refund_id,
            "amount_cents": min(state.amount_refunded, tx.amount_cents),
            "credits": credits_to_claw_back(tx, state.amount_refunded),
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
        tx, status=target, metadata=metadata, updated_at=now, stripe_payment_intent_id=state.payment_intent_id
    )
    return Change(moved, tx.status, tuple(announced))


class PaymentsError(Exception):
    pass


class TransactionNotFoundError(PaymentsError, LookupError):
    pass


class NotRefundableError(PaymentsError):
    pass


class UnknownPackageError(PaymentsError):
    pass


class NotAtStripeError(PaymentsError, LookupError):
    """Stripe has no such object: an event naming it is none of ours (or not Stripe's)."""


class NotYetError(PaymentsError):
    """What Stripe reports is ours but not recorded here yet (its command has not committed): retry."""


class StripeUnavailableError(PaymentsError):
    """Stripe could not be reached or refused the call: nothing was stored."""
