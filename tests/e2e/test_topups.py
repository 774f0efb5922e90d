"""Custom top-ups: any number of credits between the bounds, priced by the table, paid at localstripe."""

from __future__ import annotations

import uuid

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.convergence import ledger_view, welcomed
from tests.e2e.stripe_support import pay, payment_intent_of, settled


def top_up(system: System, token: str, credits: int) -> httpx.Response:
    headers = {**bearer(token), "Idempotency-Key": str(uuid.uuid4())}
    return httpx.post(f"{system.url('payments')}/api/checkout", json={"credits": credits}, headers=headers, timeout=30)


def test_a_top_up_of_137_credits_costs_what_the_table_says_and_grants_137(system: System) -> None:
    token, user_id = welcomed(system)
    prices = httpx.get(f"{system.url('payments')}/api/credit-packages/top-up", timeout=30).json()
    assert (prices["min_credits"], prices["max_credits"], prices["tiers"][0]) == (
        20, 10_000, {"from_credits": 20, "cents_per_credit": "19.98"},
    )  # fmt: skip
    started = top_up(system, token, 137)
    assert started.status_code == 201, started.text
    assert (started.json()["credits"], started.json()["amount"], started.json()["currency"]) == (137, 2737, "USD")
    admin = admin_token(system)
    assert pay(system, payment_intent_of(system, admin, started.json()["transaction_id"]))["status"] == "succeeded"
    tx = settled(system, admin, started.json()["transaction_id"], "COMPLETED")
    assert (tx["credits"], tx["amount"], tx["description"]) == (137, 2737, "Top-up of 137 credits: 137 credits")
    wait_until(lambda: ledger_view(system, token, user_id)["balance"] == 147, timeout=30, what="+137")
    [purchase] = [e for e in ledger_view(system, token, user_id)["entries"] if e["type"] == "PURCHASE"]
    assert (purchase["amount"], purchase["metadata"]["amount_cents"]) == (137, 2737)


def test_a_top_up_outside_the_bounds_is_refused_naming_them_and_makes_nothing(system: System) -> None:
    token, _ = welcomed(system)
    for credits in (19, 10_001):
        refused = top_up(system, token, credits)
        assert refused.status_code == 422, refused.text
        assert {k: refused.json()[k] for k in ("min", "max", "detail")} == {
            "min": 20, "max": 10_000, "detail": f"A top-up is of 20 to 10000 credits, not {credits}.",
        }  # fmt: skip
    both = httpx.post(f"{system.url('payments')}/api/checkout", json={"credits": 50, "package_id": "basic"},
                      headers={**bearer(token), "Idempotency-Key": "both"}, timeout=30)  # fmt: skip
    assert both.status_code == 422
    listed = httpx.get(f"{system.url('payments')}/api/user/transactions", headers=bearer(token), timeout=30)
    assert listed.json()["transactions"] == []
