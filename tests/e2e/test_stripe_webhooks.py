"""Stripe's webhooks as they really come: twice, in any order, stale, or not from Stripe at all."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token
from tests.e2e.convergence import assert_converged, welcomed
from tests.e2e.stripe_support import (
    checkout,
    deliver,
    outcome,
    pay,
    payment_intent_of,
    processed,
    received_events,
    settled,
    signed_event,
    stripe_api,
    stripe_events,
    transaction,
)


def intent_object(system: System, intent: str) -> dict[str, Any]:
    return stripe_api(system, f"payment_intents/{intent}", "GET")


def entries(view: dict[str, Any]) -> list[tuple[str, int]]:
    return [(e["type"], e["amount"]) for e in view["entries"]]


def drained(system: System, before: int, added: int) -> None:
    """Wait until the inbox holds `added` more events and the worker has had a moment to apply them."""
    wait_until(lambda: received_events(system) >= before + added, timeout=20, what="the deliveries in the inbox")


def test_the_same_webhook_five_times_and_a_second_event_for_the_same_payment_grant_once(system: System) -> None:
    token, user_id = welcomed(system)
    admin = admin_token(system)
    answer = checkout(system, token, "basic").json()
    intent = payment_intent_of(system, admin, answer["transaction_id"])
    pay(system, intent)
    settled(system, admin, answer["transaction_id"], "COMPLETED")
    sent = next(e for e in stripe_events(system, "payment_intent.succeeded") if e["data"]["object"]["id"] == intent)

    body, header = signed_event(system, "payment_intent.succeeded", sent["data"]["object"], event_id=sent["id"])
    receipts = [deliver(system, body, header) for _ in range(5)]
    assert [(r.status_code, r.json()["duplicate"]) for r in receipts] == [(200, True)] * 5
    # Stripe may report one change with two Event objects: the business key (the PaymentIntent) dedupes.
    other, header = signed_event(system, "payment_intent.succeeded", sent["data"]["object"])
    assert deliver(system, other, header).json()["duplicate"] is False
    charge = {"id": "ch_again", "object": "charge", "payment_intent": intent, "amount_refunded": 0}
    assert deliver(system, *signed_event(system, "charge.succeeded", charge)).status_code == 200

    view = assert_converged(system, token, user_id)
    assert entries(view) == [("PURCHASE", 50), ("BONUS", 10)]
    assert transaction(system, admin, answer["transaction_id"])["status"] == "COMPLETED"


def test_payment_failed_before_and_after_succeeded_leaves_it_completed_and_credited_once(system: System) -> None:
    token, user_id = welcomed(system)
    admin = admin_token(system)
    answer = checkout(system, token, "basic").json()
    tx_id = answer["transaction_id"]
    intent = payment_intent_of(system, admin, tx_id)
    failed_copy = {**intent_object(system, intent), "status": "requires_payment_method",
                   "last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}  # fmt: skip

    # Before: the event says failed, Stripe says it is waiting for a card: nothing moves.
    before = received_events(system)
    assert deliver(system, *signed_event(system, "payment_intent.payment_failed", failed_copy)).status_code == 200
    drained(system, before, 1)
    pay(system, intent)
    settled(system, admin, tx_id, "COMPLETED")
    # After: a late payment_failed never turns COMPLETED back.
    late = signed_event(system, "payment_intent.payment_failed", failed_copy)
    assert deliver(system, *late).json()["duplicate"] is False
    wait_until(lambda: processed(system, json.loads(late[0])["id"]), timeout=20, what="the late event applied")

    tx = transaction(system, admin, tx_id)
    assert (tx["status"], "failure" in tx["metadata"]) == ("COMPLETED", False)
    assert entries(assert_converged(system, token, user_id)) == [("PURCHASE", 50), ("BONUS", 10)]


def test_a_cancelled_payment_intent_cancels_its_transaction(system: System) -> None:
    token, user_id = welcomed(system)
    admin = admin_token(system)
    tx_id = checkout(system, token, "premium").json()["transaction_id"]
    intent = payment_intent_of(system, admin, tx_id)
    cancelled = stripe_api(system, f"payment_intents/{intent}/cancel")
    assert cancelled["status"] == "canceled"
    # localstripe sends no payment_intent.canceled: the test signs the one Stripe would send.
    assert deliver(system, *signed_event(system, "payment_intent.canceled", cancelled)).status_code == 200
    assert settled(system, admin, tx_id, "CANCELLED")["status"] == "CANCELLED"
    assert entries(assert_converged(system, token, user_id)) == [("BONUS", 10)]


def test_forged_stale_and_altered_webhooks_are_refused_and_change_nothing(system: System) -> None:
    token, user_id = welcomed(system)
    admin = admin_token(system)
    tx_id = checkout(system, token, "pro").json()["transaction_id"]
    intent = payment_intent_of(system, admin, tx_id)
    pay(system, intent)
    settled(system, admin, tx_id, "COMPLETED")
    refunded = {"id": "ch_forged", "object": "charge", "payment_intent": intent, "amount_refunded": 2499}
    body, header = signed_event(system, "charge.refunded", refunded)
    url = f"{system.url('payments')}/webhooks/stripe"
    before = received_events(system)

    forged = {"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}", "Content-Type": "application/json"}
    stale_body, stale_header = signed_event(system, "charge.refunded", refunded, timestamp=int(time.time()) - 3600)
    altered = body.replace(b'"amount_refunded": 2499', b'"amount_refunded": 2498')
    attempts = {
        "forged": httpx.post(url, content=body, headers=forged, timeout=30),
        "stale": deliver(system, stale_body, stale_header),
        "altered": deliver(system, altered, header),
        "unsigned": httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=30),
    }
    for name, response in attempts.items():
        assert response.status_code == 400, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "signature" in response.json()["detail"].lower(), name
    assert received_events(system) == before
    assert transaction(system, admin, tx_id)["status"] == "COMPLETED"
    assert entries(assert_converged(system, token, user_id)) == [("PURCHASE", 150), ("BONUS", 10)]


def test_a_signed_event_for_a_payment_intent_of_someone_else_changes_nothing(system: System) -> None:
    stranger = {"id": f"pi_{uuid.uuid4().hex[:14]}", "object": "payment_intent", "status": "succeeded"}
    body, header = signed_event(system, "payment_intent.succeeded", stranger)
    response = deliver(system, body, header)
    assert (response.status_code, response.json()["duplicate"]) == (200, False)
    event_id = json.loads(body)["id"]
    wait_until(lambda: processed(system, event_id), timeout=20, what="the stranger's event settled")
    assert outcome(system, event_id) == f"ignored: Stripe has no {stranger['id']}"
