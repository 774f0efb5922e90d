"""A signed webhook, the one way for every provider (Clerk through Svix, Stripe): the signature is checked
on the raw bytes before anything is parsed, then the JSON is read within bounds and parsed by the
provider's own parse-only module, then the delivery is claimed in the inbox and its effect made in one
transaction, so a redelivery changes nothing and a crash leaves neither."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from shared import metrics
from shared.guard import body_limit
from shared.inbox import first_delivery
from shared.inputs import InputError, load_json
from shared.problems import Problem, responses

Event = TypeVar("Event")
MAX_DEPTH = 32  # a provider's payload nests about ten levels (a PaymentIntent's charges, a user's emails)


class SignatureError(Exception):
    """The delivery is not signed by the provider (a tampered body, an old timestamp, a missing header)."""


class PayloadError(ValueError):
    """Signed, but not an event this service understands."""


# Checks the signature of `raw` with its `headers` (raises SignatureError); returns the delivery's id where
# the provider sends it in a header (Svix does; Stripe's is the event's own id, in the body).
Verify = Callable[[bytes, Mapping[str, str]], str | None]


def route(router: APIRouter, path: str, receipt: type[BaseModel], max_body: int) -> Callable[[Any], Any]:
    """A signed webhook's route: what it answers (400 for a bad signature or payload, 503 while unconfigured)
    and how large a body it reads."""
    return router.post(path, response_model=receipt, responses=responses(400, 503), openapi_extra=body_limit(max_body))


def configured(provider: str, variable: str) -> Callable[[Request], Awaitable[Verify]]:
    """The route's dependency on its verifier, made at start from the provider's secret and kept on
    app.state (`webhook_verify`; a service takes one provider's webhooks): 503 while no secret is set."""

    async def verifier(request: Request) -> Verify:
        verify: Verify | None = request.app.state.webhook_verify
        if verify is None:
            raise Problem(503, f"{provider} webhooks are not configured ({variable}).")
        return verify

    return verifier


async def verified(
    request: Request, verify: Verify, parse: Callable[[Any], Event], provider: str
) -> tuple[str | None, Event]:
    """The delivery's id (if in a header) and its event, or a 400 problem; the body is bounded by the route's
    limit."""
    raw = await request.body()
    try:
        delivery_id = verify(raw, request.headers)
    except SignatureError as exc:
        counted(provider, "bad_signature")
        raise Problem(400, f"Webhook signature rejected: {exc}") from exc
    try:
        return delivery_id, parse(load_json(raw, max_depth=MAX_DEPTH))
    except (InputError, PayloadError) as exc:
        counted(provider, "bad_payload")
        raise Problem(400, f"Not a {provider} event this service understands: {exc}") from exc


def counted(provider: str, outcome: str) -> None:
    """creditstream_webhooks_total{source, outcome}: bad_signature, bad_payload, applied or duplicate."""
    metrics.WEBHOOKS.add(1, {"source": provider.lower(), "outcome": outcome})


async def apply_once(
    pool: AsyncConnectionPool, inbox: str, delivery_id: str, effect: Callable[[AsyncConnection], Awaitable[None]]
) -> bool:
    """Claim the delivery in `inbox` and make its effect in one transaction; False when it came before."""
    async with pool.connection() as conn, conn.transaction():
        if not await first_delivery(conn, inbox, delivery_id):
            return False
        await effect(conn)
    return True
