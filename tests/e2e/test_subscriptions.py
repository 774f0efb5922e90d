"""Subscriptions end to end against localstripe: a saved card, a subscription, its paid invoice's
signed webhook, the period's credits with their expiry in the ledger and in projections."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
import psycopg

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import bearer
from tests.e2e.convergence import assert_converged, welcomed
from tests.e2e.stripe_support import DECLINED_CARD, card_at_stripe, deliver, signed_event, stripe_api, stripe_events


def call(system: System, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    url = f"{system.url('payments')}{path}"
    return httpx.request(method, url, headers={**bearer(token), **kwargs.pop("headers", {})}, timeout=30, **kwargs)


def subscribe(system: System, token: str, plan_id: str, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key or str(uuid.uuid4())}
    return call(system, token, "POST", "/api/subscriptions", json={"plan_id": plan_id}, headers=headers)


def _credits(system: System, token: str) -> int:
    response = httpx.get(f"{system.url('projections')}/api/user/credits", headers=bearer(token), timeout=30)
    return int(response.json()["balance"])


def test_a_subscription_grants_its_period_credits_once_expiring_at_the_period_end(system: System) -> None:
    token, user_id = welcomed(system)
    assert [p["id"] for p in call(system, token, "GET", "/api/subscription-plans").json()] == ["starter", "creator"]
    assert subscribe(system, token, "starter").status_code == 409  # no card yet

    saved = call(system, token, "POST", "/api/billing/payment-methods", json={"payment_method": card_at_stripe(system)})
    assert saved.status_code == 201, saved.text
    (card,) = saved.json()
    assert {k: card[k] for k in ("brand", "last4", "exp_month", "exp_year", "default")} == {
        "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034, "default": True,
    }  # fmt: skip
    assert call(system, token, "GET", "/api/billing/payment-methods").json() == saved.json()

    key = str(uuid.uuid4())
    created = subscribe(system, token, "starter", key)
    assert created.status_code == 201, created.text
    sub = created.json()
    assert (sub["plan"]["id"], sub["plan"]["credits"], sub["cancel_at_period_end"]) == ("starter", 100, False)
    assert subscribe(system, token, "starter", key).json() == sub  # a retry answers the same
    assert subscribe(system, token, "creator").status_code == 409  # one subscription at a time

    wait_until(lambda: _credits(system, token) == 110, timeout=30, what="the first period's 100 credits")
    current = call(system, token, "GET", "/api/user/subscription").json()["subscription"]
    assert (current["id"], current["status"]) == (sub["id"], "ACTIVE")
    period_end = datetime.fromisoformat(current["current_period_end"])
    assert datetime.fromisoformat(current["next_renewal"]) == period_end

    account = httpx.get(f"{system.url('ledger')}/api/accounts/{user_id}", headers=bearer(token)).json()
    lots = [(lot["amount"], lot["expires_at"]) for lot in account["lots"]]
    assert [(amount, datetime.fromisoformat(at) if at else None) for amount, at in lots] == [
        (100, period_end), (10, None),
    ]  # fmt: skip

    # The invoice's webhook again, and a second Event object for the same invoice: granted once.
    paid = [e for e in stripe_events(system, "invoice.payment_succeeded")
            if e["data"]["object"]["subscription"] == _stripe_subscription(system, sub["id"])]  # fmt: skip
    assert len(paid) == 1
    invoice = paid[0]["data"]["object"]
    assert deliver(system, *signed_event(system, "invoice.payment_succeeded", invoice, event_id=paid[0]["id"])).json()[
        "duplicate"
    ]
    assert not deliver(system, *signed_event(system, "invoice.paid", invoice)).json()["duplicate"]
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("PURCHASE", 100), ("BONUS", 10)]
    transactions = call(system, token, "GET", "/api/user/transactions", params={"type": "SUBSCRIPTION"}).json()
    assert [(t["status"], t["credits"], t["amount"]) for t in transactions["transactions"]] == [("COMPLETED", 100, 900)]

    cancelled = call(system, token, "DELETE", f"/api/subscriptions/{sub['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["cancel_at_period_end"], cancelled.json()["next_renewal"]) == (True, None)
    assert call(system, token, "GET", "/api/user/subscription").json()["subscription"]["status"] == "ACTIVE"


def test_a_failed_invoice_grants_nothing_and_leaves_the_subscription_past_due(system: System) -> None:
    token, user_id = welcomed(system)
    declined = card_at_stripe(system, DECLINED_CARD)
    assert (
        call(system, token, "POST", "/api/billing/payment-methods", json={"payment_method": declined}).status_code
        == 201
    )
    created = subscribe(system, token, "creator")
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "INCOMPLETE"
    stripe_sub = _stripe_subscription(system, created.json()["id"])
    (invoice,) = stripe_api(system, f"invoices?subscription={stripe_sub}", "GET")["data"]
    assert invoice["status"] == "open"
    # localstripe sends nothing when a subscription's first invoice is declined; Stripe sends this.
    assert deliver(system, *signed_event(system, "invoice.payment_failed", invoice)).status_code == 200
    wait_until(
        lambda: call(system, token, "GET", "/api/user/subscription").json()["subscription"]["status"] == "PAST_DUE",
        timeout=30,
        what="the failed invoice",
    )
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("BONUS", 10)]
    listed = call(system, token, "GET", "/api/user/transactions", params={"type": "SUBSCRIPTION"}).json()
    assert listed["transactions"] == []


def _stripe_subscription(system: System, sub_id: str) -> str:
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT stripe_subscription_id FROM payments.subscriptions WHERE id = %s", (sub_id,)
        ).fetchone()
    assert row is not None
    return str(row[0])
