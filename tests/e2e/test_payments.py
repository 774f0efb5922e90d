"""Buying credits end to end: checkout over HTTP, payment at localstripe, its signed webhook, the
ledger's grant and the balance a frontend reads from projections."""

from __future__ import annotations

import time

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.convergence import assert_converged, welcomed
from tests.e2e.stripe_support import DECLINED_CARD, checkout, pay, payment_intent_of, settled, stripe_events


def projected_balance(system: System, token: str) -> int:
    response = httpx.get(f"{system.url('projections')}/api/user/credits", headers=bearer(token), timeout=30)
    return int(response.json()["balance"])


def test_buying_pro_reaches_the_balance_through_a_signed_webhook(system: System) -> None:
    token, user_id = welcomed(system)
    admin = admin_token(system)
    response = checkout(system, token, "pro")
    assert response.status_code == 201, response.text
    answer = response.json()
    assert (answer["amount"], answer["currency"], answer["credits"], answer["status"]) == (2499, "USD", 150, "PENDING")
    assert answer["client_secret"].startswith("pi_")
    intent = payment_intent_of(system, admin, answer["transaction_id"])

    started = time.monotonic()
    assert pay(system, intent)["status"] == "succeeded"
    wait_until(lambda: projected_balance(system, token) == 160, timeout=30, what="160 credits in projections")
    print(f"confirm → 160 credits in projections: {time.monotonic() - started:.2f} s")

    tx = settled(system, admin, answer["transaction_id"], "COMPLETED")
    assert (tx["user_id"], tx["type"], tx["amount"], tx["credits"]) == (user_id, "CREDIT_PURCHASE", 2499, 150)
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("PURCHASE", 150), ("BONUS", 10)]
    assert view["entries"][0]["metadata"]["transaction_id"] == answer["transaction_id"]
    assert any(e["data"]["object"]["id"] == intent for e in stripe_events(system, "payment_intent.succeeded"))


def test_a_declined_card_fails_the_transaction_and_grants_nothing(system: System) -> None:
    token, user_id = welcomed(system)
    admin = admin_token(system)
    answer = checkout(system, token, "basic").json()
    intent = payment_intent_of(system, admin, answer["transaction_id"])
    assert pay(system, intent, DECLINED_CARD)["error"]["code"] == "card_declined"
    tx = settled(system, admin, answer["transaction_id"], "FAILED")
    assert tx["metadata"]["failure"] == "Your card was declined."
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("BONUS", 10)]
