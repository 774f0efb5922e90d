"""POST /webhooks/stripe: Stripe-signed events, taken in as every signed webhook is (shared/webhooks.py): the
signature checked on the raw bytes before anything is parsed, a delivery queued once per event id and
answered at once. The worker then reads the object from Stripe and applies what it is now (stripe_events.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import stripe
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from services.payments.api import PaymentsDep
from services.payments.commands import ReceiveStripeEvent
from services.payments.stripe_objects import parse_event
from shared.guard import GuardedRoute
from shared.webhooks import SignatureError, Verify, configured, counted, route, verified

router = APIRouter(tags=["webhooks"], route_class=GuardedRoute)
MAX_BODY_BYTES = 512 * 1024  # Stripe's events are a few KB; an object with many line items tens
TOLERANCE_SECONDS = 300  # Stripe's own default: an older signature is a replay
MAX_SIGNATURE_LENGTH = 2000


class WebhookReceipt(BaseModel):
    id: str
    type: str
    duplicate: bool


def stripe_verifier(secret: str) -> Verify:
    def verify(raw: bytes, headers: Mapping[str, str]) -> None:
        signature = headers.get("stripe-signature", "")
        if len(signature) > MAX_SIGNATURE_LENGTH:
            raise SignatureError(f"the Stripe-Signature header is longer than {MAX_SIGNATURE_LENGTH} characters")
        try:
            stripe.WebhookSignature.verify_header(raw.decode("utf-8", "replace"), signature, secret, TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError as exc:
            raise SignatureError(exc.user_message or str(exc)) from exc
        return None  # the delivery's id is the event's own

    return verify


Verified = Annotated[Verify, Depends(configured("Stripe", "STRIPE_WEBHOOK_SECRET"))]


@route(router, "/webhooks/stripe", WebhookReceipt, MAX_BODY_BYTES)
async def stripe_webhook(
    request: Request,
    verify: Verified,
    payments: PaymentsDep,
) -> WebhookReceipt:
    """Stripe events (payment_intent.*, charge.refunded, ...): received once per id, applied by a worker."""
    _, event = await verified(request, verify, parse_event, "Stripe")
    new = await payments.handle(ReceiveStripeEvent(event_id=event.id, kind=event.type, object_id=event.object_id))
    counted("Stripe", "applied" if new else "duplicate")
    return WebhookReceipt(id=event.id, type=event.type, duplicate=not new)
