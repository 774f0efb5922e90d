"""One user's month of credits, compressed into seconds and driven over HTTP: the welcome bonus, a
subscription's credits that expire at the period's end, a promotion that expires unspent, spending
in expiry order, and an auto-recharge. The history the ledger's entries API prints is checked line by
line (run with -s to see it)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.credits import PACKAGES, PLANS
from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.convergence import all_pages, assert_converged, welcomed
from tests.e2e.stripe_support import card_at_stripe


def payments(system: System, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {**bearer(token), "Idempotency-Key": str(uuid.uuid4())}
    return httpx.request(method, f"{system.url('payments')}{path}", headers=headers, timeout=30, **kwargs)


def ledger(system: System, token: str, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {**bearer(token), "Idempotency-Key": str(uuid.uuid4())}
    return httpx.post(f"{system.url('ledger')}{path}", json=body, headers=headers, timeout=30)


def test_a_month_of_credits_reads_back_entry_by_entry(system: System) -> None:
    token, user_id = welcomed(system)  # BONUS 10
    admin = admin_token(system)
    account = f"/api/accounts/{user_id}"
    balance = lambda: int(httpx.get(f"{system.url('ledger')}{account}", headers=bearer(token)).json()["balance"])  # noqa: E731

    card = card_at_stripe(system)
    assert (
        payments(system, token, "POST", "/api/billing/payment-methods", json={"payment_method": card}).status_code
        == 201
    )
    assert payments(system, token, "POST", "/api/subscriptions", json={"plan_id": "starter"}).status_code == 201
    wait_until(lambda: balance() == 110, timeout=30, what="the subscription's first period")

    promo_ends = datetime.now(UTC) + timedelta(seconds=4)
    promo = {"amount": 20, "type": "BONUS", "description": "Launch promotion", "expires_at": promo_ends.isoformat()}
    assert ledger(system, admin, f"{account}/grants", promo).status_code == 201
    assert ledger(system, token, f"{account}/debits", {"amount": 12, "description": "renders"}).status_code == 201
    wait_until(lambda: balance() == 110, timeout=20, what="the promotion's unspent 8 expiring")
    after_expiry = datetime.now(UTC)

    setting = {"enabled": True, "threshold": 5, "package_id": "basic", "monthly_cap_cents": 2000}
    assert payments(system, token, "PUT", "/api/billing/auto-recharge", json=setting).status_code == 200
    watching = lambda: httpx.get(f"{system.url('ledger')}{account}", headers=bearer(token)).json()["recharge_threshold"]  # noqa: E731
    wait_until(lambda: watching() == 5, timeout=20, what="the ledger watching for auto-recharge")
    assert ledger(system, token, f"{account}/debits", {"amount": 96, "description": "video"}).status_code == 201
    assert ledger(system, token, f"{account}/debits", {"amount": 10, "description": "renders"}).status_code == 201
    wait_until(lambda: balance() == 54, timeout=30, what="the auto-recharge")

    _, entries = all_pages(f"{system.url('ledger')}{account}/entries", token, "entries")
    printed = [{k: e[k] for k in ("type", "amount", "balance_after", "description")} for e in reversed(entries)]
    print("\n".join(json.dumps(e) for e in printed))
    assert [(e["type"], e["amount"], e["balance_after"]) for e in printed] == [
        ("BONUS", 10, 10),
        ("PURCHASE", 100, 110),  # Starter: expires at the period's end
        ("BONUS", 20, 130),
        ("USAGE", -12, 118),  # from the promotion: it expires first
        ("EXPIRED", -8, 110),  # what was left of it
        ("USAGE", -96, 14),  # from the subscription's credit, which expires before the bonus
        ("USAGE", -10, 4),  # the subscription's last 4, then 6 of the bonus: available 14 → 4, below 5
        ("PURCHASE", 50, 54),  # Basic, bought off-session
    ]
    lots = httpx.get(f"{system.url('ledger')}{account}", headers=bearer(token)).json()["lots"]
    assert [(lot["remaining"], lot["expires_at"] is None) for lot in lots] == [(4, True), (50, True)]
    assert_converged(system, token, user_id)
    _the_read_models_tell_the_same_month(system, token, entries, after_expiry)


def projected(system: System, token: str, path: str, **params: str) -> dict[str, Any]:
    response = httpx.get(f"{system.url('projections')}{path}", params=params, headers=bearer(token), timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _the_read_models_tell_the_same_month(
    system: System, token: str, entries: list[dict[str, Any]], after_expiry: datetime
) -> None:
    """What the dashboard, the profile and the past balance say of that month equals the ledger and payments."""

    def caught_up() -> bool:
        board = projected(system, token, "/api/user/dashboard")
        return board["counts"]["transactions"] == 2 and any(
            a["kind"] == "auto_recharge" for a in board["recent_activity"]
        )

    wait_until(caught_up, timeout=20, what="the payments read models caught up")
    board = projected(system, token, "/api/user/dashboard")
    assert [(e["id"], e["amount"]) for e in board["credit_history"]] == [(e["id"], e["amount"]) for e in entries]
    sub = board["subscription"]
    assert (sub["status"], sub["plan_id"], sub["credits"]) == ("ACTIVE", "starter", 100)
    paid = PLANS["starter"].price_cents + PACKAGES["basic"].price_cents
    assert board["totals"] == {"credits_bought": 150, "credits_spent": 118, "money_spent_cents": paid}
    today = datetime.now(UTC).date().isoformat()
    assert [(u["day"], u["operation"], u["credits"]) for u in board["usage"]] == [(today, "other", 118)]
    kinds = {a["kind"] for a in board["recent_activity"]}
    assert {"renewal", "credits_expired", "auto_recharge", "purchase", "balance_low"} <= kinds
    assert board["expiring_soon"] == []  # the subscription's lot is spent; the promotion's expired
    held = httpx.get(f"{system.url('ledger')}/api/accounts/{board['user']['id']}", headers=bearer(token)).json()
    assert (
        [(lot["remaining"], lot["expires_at"]) for lot in board["lots"]]
        == [(lot["remaining"], lot["expires_at"]) for lot in held["lots"] if lot["remaining"] > 0]
        == [(4, None), (50, None)]
    )

    mine = httpx.get(f"{system.url('payments')}/api/user/transactions", headers=bearer(token), timeout=30).json()
    fields = ("id", "type", "status", "amount", "credits")
    profile = projected(system, token, "/api/user/profile")
    assert sorted(tuple(t[f] for f in fields) for t in profile["transactions"]) == sorted(
        tuple(t[f] for f in fields) for t in mine["transactions"]
    )

    past = projected(system, token, "/api/user/credits", at=after_expiry.isoformat())
    assert past["balance"] == 110 and [e["amount"] for e in past["history"]] == [-8, -12, 20, 100, 10]
