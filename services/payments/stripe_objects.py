"""Stripe payloads → what payments acts on. Parsing only: a webhook's signature is checked before
this runs, and objects read back from Stripe's API come through here too, so both doors agree."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.payments.domain import InvoiceState, PaymentState, SubscriptionState
from shared.webhooks import PayloadError

# Events payments acts on: the field of the event's object that names what to read back from Stripe,
# and what kind of object that is (by its id prefix).
OBJECT_FIELD = {
    "payment_intent.succeeded": ("id", "pi_"),
    "payment_intent.payment_failed": ("id", "pi_"),
    "payment_intent.canceled": ("id", "pi_"),
    "payment_intent.processing": ("id", "pi_"),
    "charge.refunded": ("payment_intent", "pi_"),
    "charge.refund.updated": ("payment_intent", "pi_"),
    "charge.succeeded": ("payment_intent", "pi_"),
    "charge.failed": ("payment_intent", "pi_"),
    "invoice.paid": ("id", "in_"),
    "invoice.payment_succeeded": ("id", "in_"),
    "invoice.payment_failed": ("id", "in_"),
    "customer.subscription.created": ("id", "sub_"),
    "customer.subscription.updated": ("id", "sub_"),
    "customer.subscription.deleted": ("id", "sub_"),
}
HANDLED = tuple(OBJECT_FIELD)
# Stripe ids are a prefix, an underscore and base62 (evt_1NG8Du2eZvKYlo2CUI79vXWy); bounded so a
# claim row stays a small key.
STRIPE_ID = re.compile(r"[a-z]{1,10}_[A-Za-z0-9_]{1,120}")


class StripePayloadError(PayloadError):
    pass


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    object_id: str | None  # the PaymentIntent, invoice or subscription to read; None: nothing to act on


@dataclass(frozen=True)
class Card:
    """A saved card as the frontend may see it: brand, last 4 digits and expiry, never more."""

    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    default: bool


def parse_event(payload: Any) -> StripeEvent:
    if not isinstance(payload, dict):
        raise StripePayloadError("a Stripe event is an object")
    event_id, kind = payload.get("id"), payload.get("type")
    if not isinstance(event_id, str) or not STRIPE_ID.fullmatch(event_id) or not event_id.startswith("evt_"):
        raise StripePayloadError("the event has no Stripe event id (evt_...)")
    if not isinstance(kind, str) or not 0 < len(kind) <= 100 or not kind.isascii():
        raise StripePayloadError("the event has no type")
    if kind not in OBJECT_FIELD:
        return StripeEvent(event_id, kind, None)
    field, prefix = OBJECT_FIELD[kind]
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise StripePayloadError(f"{kind} carries no data.object")
    named = obj.get(field)
    if named is None and field != "id":
        return StripeEvent(event_id, kind, None)  # e.g. a charge made without a PaymentIntent: not ours
    return StripeEvent(event_id, kind, _id(named, prefix, f"data.object.{field}"))


def payment_state(intent: dict[str, Any]) -> PaymentState:
    """A PaymentIntent as Stripe's API returns it, with `latest_charge` expanded."""
    charge = intent.get("latest_charge")
    charge = charge if isinstance(charge, dict) else {}
    error = intent.get("last_payment_error")
    metadata = intent.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    amount, refunded = intent.get("amount"), charge.get("amount_refunded") or 0
    if not isinstance(amount, int) or not isinstance(refunded, int):
        raise StripePayloadError("the PaymentIntent's amounts are not integers")
    return PaymentState(
        payment_intent_id=_id(intent.get("id"), "pi_", "id"),
        status=str(intent.get("status")),
        amount=amount,
        currency=str(intent.get("currency") or ""),
        transaction_id=_text(metadata.get("transaction_id")),
        charge_id=_text(charge.get("id")),
        amount_refunded=refunded,
        failure=_failure(error),
        receipt_url=_text(charge.get("receipt_url")),
    )


def invoice_state(invoice: dict[str, Any]) -> InvoiceState:
    """An invoice as Stripe's API returns it; the period is its subscription line's (the invoice's own
    period_start/end name the period before, for a renewal)."""
    lines = (invoice.get("lines") or {}).get("data") or []
    period = next((line.get("period") for line in lines if isinstance(line, dict) and line.get("period")), None)
    period = period or {"start": invoice.get("period_start"), "end": invoice.get("period_end")}
    subscription = invoice.get("subscription")
    if isinstance(subscription, dict):
        subscription = subscription.get("id")
    return InvoiceState(
        id=_id(invoice.get("id"), "in_", "id"),
        subscription_id=_id(subscription, "sub_", "subscription") if subscription else None,
        status=str(invoice.get("status")),
        amount_paid=_int(invoice.get("amount_paid"), "amount_paid"),
        currency=str(invoice.get("currency") or ""),
        period_start=_moment(period.get("start"), "period.start"),
        period_end=_moment(period.get("end"), "period.end"),
        attempted=bool(invoice.get("attempted")),
    )


def subscription_state(subscription: dict[str, Any]) -> SubscriptionState:
    items = (subscription.get("items") or {}).get("data") or []
    first = items[0] if items and isinstance(items[0], dict) else {}
    # Newer API versions keep the period on the item; older ones (and localstripe) on the subscription.
    start = subscription.get("current_period_start") or first.get("current_period_start")
    end = subscription.get("current_period_end") or first.get("current_period_end")
    return SubscriptionState(
        id=_id(subscription.get("id"), "sub_", "id"),
        status=str(subscription.get("status")),
        period_start=_moment(start, "current_period_start"),
        period_end=_moment(end, "current_period_end"),
        cancel_at_period_end=bool(subscription.get("cancel_at_period_end")),
        ours=_text((subscription.get("metadata") or {}).get("subscription_id"))
        if isinstance(subscription.get("metadata"), dict)
        else None,
    )


def card(method: dict[str, Any], default: str | None) -> Card | None:
    """A PaymentMethod as a saved card; None if it is not a card."""
    details = method.get("card")
    if method.get("type") != "card" or not isinstance(details, dict):
        return None
    return Card(
        id=_id(method.get("id"), "pm_", "id"),
        brand=_text(details.get("brand")) or "card",
        last4=(_text(details.get("last4")) or "")[:4],
        exp_month=_int(details.get("exp_month"), "exp_month"),
        exp_year=_int(details.get("exp_year"), "exp_year"),
        default=method.get("id") == default,
    )


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise StripePayloadError(f"{where} is not an integer")
    return value


def _moment(value: Any, where: str) -> datetime:
    return datetime.fromtimestamp(_int(value, where), UTC)


def _failure(error: Any) -> str | None:
    """Why the last attempt failed, if it did: Stripe's message, else its code; never empty."""
    if not isinstance(error, dict):
        return None
    return _text(error.get("message")) or _text(error.get("code")) or "failed"


def _id(value: Any, prefix: str, where: str) -> str:
    if not isinstance(value, str) or not value.startswith(prefix) or not STRIPE_ID.fullmatch(value):
        raise StripePayloadError(f"{where} is not a Stripe id ({prefix}...)")
    return value


def _text(value: Any) -> str | None:
    """Stripe's free text, made storable whatever it holds (no NUL, no lone surrogate), and bounded."""
    if not isinstance(value, str):
        return None
    return value.replace("\x00", "").encode("utf-8", "replace").decode()[:500] or None
