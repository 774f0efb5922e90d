"""POST /webhooks/clerk: Svix-signed Clerk events, taken in as every signed webhook is (shared/webhooks.py):
the signature checked on the raw bytes before anything is parsed, a delivery applied once per svix-id."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from svix.webhooks import Webhook, WebhookVerificationError

from services.identity.api import get_identity
from services.identity.application import ApplyClerkEvent, Identity
from services.identity.clerk import parse_event
from shared.guard import GuardedRoute
from shared.webhooks import SignatureError, Verify, configured, counted, route, verified

router = APIRouter(tags=["webhooks"], route_class=GuardedRoute)
MAX_BODY_BYTES = 512 * 1024  # Clerk's user payloads are a few KB
# Svix ids look like msg_2LhM5Pj0qEhUyo4tLgbJ7ONgU9l: bounded so a claim row stays a small key.
SVIX_ID = re.compile(r"[A-Za-z0-9_\-]{1,100}")


class WebhookReceipt(BaseModel):
    type: str
    duplicate: bool


def svix_verifier(secret: str) -> Verify:
    """Made at start, so a malformed secret stops the service instead of failing every delivery."""
    webhook = Webhook(secret)

    def verify(raw: bytes, headers: Mapping[str, str]) -> str:
        try:
            webhook.verify(raw, dict(headers))
        except WebhookVerificationError as exc:
            raise SignatureError(str(exc)) from exc
        # The id svix just verified (it reads svix-id, falling back to webhook-id).
        svix_id = headers.get("svix-id") or headers.get("webhook-id") or ""
        if not SVIX_ID.fullmatch(svix_id):
            raise SignatureError("the svix-id header is not an id Svix sends (1-100 letters, digits, _ or -)")
        return svix_id

    return verify


Verified = Annotated[Verify, Depends(configured("Clerk", "CLERK_WEBHOOK_SECRET"))]


@route(router, "/webhooks/clerk", WebhookReceipt, MAX_BODY_BYTES)
async def clerk_webhook(
    request: Request,
    verify: Verified,
    identity: Annotated[Identity, Depends(get_identity)],
) -> WebhookReceipt:
    """Svix-signed Clerk events (user.created, user.updated, user.deleted); others are acknowledged."""
    svix_id, event = await verified(request, verify, parse_event, "Clerk")
    assert svix_id is not None, "verify returns it"
    applied = await identity.execute(ApplyClerkEvent(svix_id, event))
    counted("Clerk", "applied" if applied else "duplicate")
    return WebhookReceipt(type=event.type, duplicate=not applied)
