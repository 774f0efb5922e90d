"""POST /webhooks/clerk: Svix-signed Clerk events. The signature is checked on the raw bytes before
anything is parsed; a delivery is applied once per svix-id."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from svix.webhooks import Webhook, WebhookVerificationError

from services.identity.api import get_identity
from services.identity.application import Identity
from services.identity.clerk import ClerkPayloadError, parse_event
from shared.guard import GuardedRoute, body_limit
from shared.inputs import InputError, load_json
from shared.problems import Problem, responses

router = APIRouter(tags=["webhooks"], route_class=GuardedRoute)
MAX_BODY_BYTES = 512 * 1024  # Clerk's user payloads are a few KB
# Clerk's payloads nest a few levels (user → email_addresses → verification); nothing needs more.
MAX_DEPTH = 32
# Svix ids look like msg_2LhM5Pj0qEhUyo4tLgbJ7ONgU9l: bounded so a claim row stays a small key.
SVIX_ID = re.compile(r"[A-Za-z0-9_\-]{1,100}")


class WebhookReceipt(BaseModel):
    type: str
    duplicate: bool


async def get_webhook(request: Request) -> Webhook:
    webhook: Webhook | None = request.app.state.clerk_webhook
    if webhook is None:
        raise Problem(503, "Clerk webhooks are not configured (CLERK_WEBHOOK_SECRET).")
    return webhook


@router.post(
    "/webhooks/clerk",
    response_model=WebhookReceipt,
    responses=responses(400, 503),
    openapi_extra=body_limit(MAX_BODY_BYTES),
)
async def clerk_webhook(
    request: Request,
    webhook: Annotated[Webhook, Depends(get_webhook)],
    identity: Annotated[Identity, Depends(get_identity)],
) -> WebhookReceipt:
    """Svix-signed Clerk events (user.created, user.updated, user.deleted); others are acknowledged."""
    raw = await request.body()  # bounded by the route's limit
    try:
        webhook.verify(raw, dict(request.headers))
    except WebhookVerificationError as exc:
        raise Problem(400, f"Webhook signature rejected: {exc}") from exc
    # The id svix just verified (it reads svix-id, falling back to webhook-id).
    svix_id = request.headers.get("svix-id") or request.headers.get("webhook-id") or ""
    if not SVIX_ID.fullmatch(svix_id):
        raise Problem(400, "The svix-id header is not an id Svix sends (1-100 letters, digits, _ or -).")
    try:
        event = parse_event(load_json(raw, max_depth=MAX_DEPTH))
    except (InputError, ClerkPayloadError) as exc:
        raise Problem(400, f"Not a Clerk event this service understands: {exc}") from exc
    applied = await identity.apply_clerk_event(svix_id, event)
    return WebhookReceipt(type=event.type, duplicate=not applied)
