"""Stripe payloads → what payments acts on. Parsing only: a webhook's signature is checked before
this runs, and objects read back from Stripe's API come through here too, so both doors agree."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from services.payments.domain import PaymentState

# Events whose object leads to a PaymentIntent, and the field of the object that names it.
PAYMENT_INTENT_FIELD = {
    "payment_intent.succeeded": "id",
    "payment_intent.payment_failed": "id",
    "payment_intent.canceled": "id",
    "payment_intent.processing": "id",
    "charge.refunded": "payment_intent",
    "charge.refund.updated": "payment_intent",
    "charge.succeeded": "payment_intent",
    "charge.failed": "payment_intent",
}
HANDLED = tuple(PAYMENT_INTENT_FIELD)
# Stripe ids are a prefix, an underscore and base62 (evt_1NG8Du2eZvKYlo2CUI79vXWy); bounded so a
# claim row stays a small key.
STRIPE_ID = re.compile(r"[a-z]{1,10}_[A-Za-z0-9_]{1,120}")


class StripePayloadError(ValueError):
    pass


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    payment_intent_id: str | None  # None: an event payments does not act on


def parse_event(payload: Any) -> StripeEvent:
    if not isinstance(payload, dict):
        raise StripePayloadError("a Stripe event is an object")
    event_id, kind = payload.get("id"), payload.get("type")
    if not isinstance(event_id, str) or not STRIPE_ID.fullmatch(event_id) or not event_id.startswith("evt_"):
        raise StripePayloadError("the event has no Stripe event id (evt_...)")
    if not isinstance(kind, str) or not 0 < len(kind) <= 100 or not kind.isascii():
        raise StripePayloadError("the event has no type")
    field = PAYMENT_INTENT_FIELD.get(kind)
    if field is None:
        return StripeEvent(event_id, kind, None)
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise StripePayloadError(f"{kind} carries no data.object")
    intent = obj.get(field)
    if intent is None and field == "payment_intent":
        return StripeEvent(event_id, kind, None)  # a charge made without a PaymentIntent is not ours
    return StripeEvent(event_id, kind, _id(intent, "pi_", f"data.object.{field}"))


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
    )


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
