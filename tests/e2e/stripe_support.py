"""Helpers for the payments end-to-end tests: pay at the system's localstripe as Stripe.js would (card
details go to localstripe only), sign Stripe events with the system's webhook secret (for what
localstripe never sends), and follow a transaction until it settles."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import psycopg
import stripe

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import bearer

GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000341"  # declined when charged: localstripe sends payment_intent.payment_failed


def stripe_api(system: System, path: str, method: str = "POST", **form: Any) -> dict[str, Any]:
    """A call to the system's localstripe with its secret key, as a Stripe client makes it."""
    url = f"{system.env['STRIPE_API_BASE']}/v1/{path}"
    auth = {"Authorization": f"Bearer {system.env['STRIPE_SECRET_KEY']}"}
    response = httpx.request(method, url, data=form or None, headers=auth, timeout=30)
    return dict(response.json())


def checkout(system: System, token: str, package_id: str = "pro", key: str | None = None) -> httpx.Response:
    headers = {**bearer(token), "Idempotency-Key": key or str(uuid.uuid4())}
    url = f"{system.url('payments')}/api/checkout"
    return httpx.post(url, json={"package_id": package_id}, headers=headers, timeout=30)


def pay(system: System, payment_intent_id: str, card: str = GOOD_CARD) -> dict[str, Any]:
    """What Stripe.js does with the client secret: a card PaymentMethod, attached, then confirmed."""
    stripe_api(system, f"payment_intents/{payment_intent_id}", payment_method=card_at_stripe(system, card))
    return stripe_api(system, f"payment_intents/{payment_intent_id}/confirm")


def payment_intent_of(system: System, admin: str, transaction_id: str) -> str:
    return str(transaction(system, admin, transaction_id)["stripe_payment_intent_id"])


def transaction(system: System, admin: str, transaction_id: str) -> dict[str, Any]:
    url = f"{system.url('payments')}/api/admin/transactions/{transaction_id}"
    response = httpx.get(url, headers=bearer(admin), timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def settled(system: System, admin: str, transaction_id: str, status: str, within: float = 20) -> dict[str, Any]:
    wait_until(
        lambda: transaction(system, admin, transaction_id)["status"] == status,
        timeout=within,
        what=f"transaction {transaction_id} {status}",
    )
    return transaction(system, admin, transaction_id)


def signed_event(system: System, kind: str, obj: dict[str, Any], *, event_id: str | None = None,
                 timestamp: int | None = None) -> tuple[bytes, str]:  # fmt: skip
    """A Stripe event as Stripe would send it: (body, Stripe-Signature header)."""
    event = {"id": event_id or f"evt_{uuid.uuid4().hex}", "object": "event", "type": kind,
             "created": int(time.time()), "data": {"object": obj}, "api_version": "2024-06-20"}  # fmt: skip
    body = json.dumps(event).encode()
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), system.env["STRIPE_WEBHOOK_SECRET"], timestamp=timestamp
    )
    return body, header


def deliver(system: System, body: bytes, header: str) -> httpx.Response:
    headers = {"Stripe-Signature": header, "Content-Type": "application/json"}
    return httpx.post(f"{system.url('payments')}/webhooks/stripe", content=body, headers=headers, timeout=30)


def stripe_events(system: System, kind: str) -> list[dict[str, Any]]:
    """What localstripe emitted of `kind`, oldest first."""
    return list(stripe_api(system, f"events?type={kind}&limit=100", "GET")["data"])


def received_events(system: System) -> int:
    """How many Stripe events payments has taken into its inbox."""
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT count(*) FROM payments.stripe_events").fetchone()
    return int(row[0]) if row else 0


def intents_for(system: System, transaction_id: str) -> list[str]:
    """PaymentIntents at localstripe made for this transaction."""
    listed = stripe_api(system, "payment_intents?limit=100", "GET")
    intents = []
    while True:
        intents += [i["id"] for i in listed["data"] if i["metadata"].get("transaction_id") == transaction_id]
        if not listed["has_more"]:
            return intents
        listed = stripe_api(system, f"payment_intents?limit=100&starting_after={listed['data'][-1]['id']}", "GET")


def paid_pack(system: System, token: str, admin: str, package_id: str = "basic") -> tuple[str, str]:
    """A pack bought and paid at localstripe, once its transaction is COMPLETED: (transaction id, intent)."""
    answer = checkout(system, token, package_id).json()
    intent = payment_intent_of(system, admin, answer["transaction_id"])
    assert pay(system, intent)["status"] == "succeeded"
    settled(system, admin, answer["transaction_id"], "COMPLETED")
    return answer["transaction_id"], intent


def processed(system: System, event_id: str) -> bool:
    """Whether payments' worker has applied (or set aside) this Stripe event."""
    return outcome(system, event_id) is not None


def outcome(system: System, event_id: str) -> str | None:
    """What the worker did with a received Stripe event; None while it is not processed."""
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        query = "SELECT outcome FROM payments.stripe_events WHERE id = %s AND processed_at IS NOT NULL"
        row = conn.execute(query, (event_id,)).fetchone()
    return str(row[0]) if row else None


def card_at_stripe(system: System, number: str = GOOD_CARD) -> str:
    """A card PaymentMethod made at localstripe, as Stripe.js makes one in the browser: its pm_ id."""
    method = stripe_api(
        system, "payment_methods", type="card", **{"card[number]": number, "card[exp_month]": "12",
                                                   "card[exp_year]": "2034", "card[cvc]": "123"},
    )  # fmt: skip
    return str(method["id"])
