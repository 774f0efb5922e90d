"""POST /webhooks/stripe: Stripe-signed events. The signature is checked on the raw bytes before
anything is parsed; a delivery is taken into the inbox once per event id and answered at once. The
worker then reads the PaymentIntent from Stripe and applies what it is now (application.py)."""

from __future__ import annotations

from typing import Annotated

import stripe
from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel

from services.payments.api import PaymentsDep
from services.payments.stripe_objects import StripePayloadError, parse_event
from shared.guard import GuardedRoute, body_limit
from shared.inputs import InputError, load_json
from shared.problems import Problem, responses

router = APIRouter(tags=["webhooks"], route_class=GuardedRoute)
MAX_BODY_BYTES = 512 * 1024  # Stripe's events are a few KB; an object with many line items tens
MAX_DEPTH = 32  # a PaymentIntent with its charges and card details nests about ten levels
TOLERANCE_SECONDS = 300  # Stripe's own default: an older signature is a replay


class WebhookReceipt(BaseModel):
    id: str
    type: str
    duplicate: bool


async def get_secret(request: Request) -> str:
    secret: str | None = request.app.state.stripe_webhook_secret
    if secret is None:
        raise Problem(503, "Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET).")
    return secret


@router.post(
    "/webhooks/stripe",
    response_model=WebhookReceipt,
    responses=responses(400, 503),
    openapi_extra=body_limit(MAX_BODY_BYTES),
)
async def stripe_webhook(
    request: Request,
    secret: Annotated[str, Depends(get_secret)],
    payments: PaymentsDep,
    signature: Annotated[str, Header(alias="Stripe-Signature", max_length=2000)] = "",
) -> WebhookReceipt:
    """Stripe events (payment_intent.*, charge.refunded, ...): received once per id, applied by a worker."""
    raw = await request.body()  # bounded by the route's limit
    try:
        stripe.WebhookSignature.verify_header(raw.decode("utf-8", "replace"), signature, secret, TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as exc:
        raise Problem(400, f"Webhook signature rejected: {exc.user_message or exc}") from exc
    try:
        event = parse_event(load_json(raw, max_depth=MAX_DEPTH))
    except (InputError, StripePayloadError) as exc:
        raise Problem(400, f"Not a Stripe event this service understands: {exc}") from exc
    new = await payments.receive(event.id, event.type, event.object_id)
    return WebhookReceipt(id=event.id, type=event.type, duplicate=not new)
