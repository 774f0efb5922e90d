"""POST /webhooks/clerk: Svix-signed Clerk events. The signature is checked on the raw bytes before
anything is parsed; a delivery is applied once per svix-id."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from svix.webhooks import Webhook, WebhookVerificationError

from services.identity.api import get_identity
from services.identity.application import Identity
from services.identity.clerk import ClerkPayloadError, parse_event
from shared.problems import Problem

router = APIRouter(tags=["webhooks"])
MAX_BODY_BYTES = 512 * 1024  # Clerk's user payloads are a few KB


class WebhookReceipt(BaseModel):
    type: str
    duplicate: bool


def get_webhook(request: Request) -> Webhook:
    webhook: Webhook | None = request.app.state.clerk_webhook
    if webhook is None:
        raise Problem(503, "Service Unavailable", "Clerk webhooks are not configured (CLERK_WEBHOOK_SECRET).")
    return webhook


@router.post("/webhooks/clerk", response_model=WebhookReceipt)
async def clerk_webhook(
    request: Request,
    webhook: Annotated[Webhook, Depends(get_webhook)],
    identity: Annotated[Identity, Depends(get_identity)],
) -> WebhookReceipt:
    raw = await _bounded_body(request)
    try:
        webhook.verify(raw, dict(request.headers))
    except WebhookVerificationError as exc:
        raise Problem(400, "Bad Request", f"Webhook signature rejected: {exc}") from exc
    # The id svix just verified (it reads svix-id, falling back to webhook-id).
    svix_id = request.headers.get("svix-id") or request.headers.get("webhook-id") or ""
    try:
        event = parse_event(json.loads(raw))
    except (ValueError, ClerkPayloadError) as exc:
        raise Problem(400, "Bad Request", f"Not a Clerk event this service understands: {exc}") from exc
    applied = await identity.apply_clerk_event(svix_id, event)
    return WebhookReceipt(type=event.type, duplicate=not applied)


async def _bounded_body(request: Request) -> bytes:
    too_large = Problem(413, "Content Too Large", f"A Clerk webhook body is at most {MAX_BODY_BYTES} bytes.")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)
