"""Auto-recharge against localstripe: a debit that takes available credit below the threshold buys the
user's pack off-session, once per crossing (also when twenty debits cross together), never within
the cooldown or past the monthly cap; a card that needs the customer or is declined turns it off."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import bearer
from tests.e2e.convergence import assert_converged, welcomed
from tests.e2e.stripe_support import DECLINED_CARD, card_at_stripe

NEEDS_AUTHENTICATION = "4000002500003155"


def call(system: System, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    url = f"{system.url('payments')}{path}"
    return httpx.request(method, url, headers=bearer(token), timeout=30, **kwargs)


def recharging(system: System, card: str = "4242424242424242", cap: int = 5000) -> tuple[str, str]:
    """A welcomed user with a saved card and auto-recharge on (below 5, Basic): (token, user id)."""
    token, user_id = welcomed(system)
    saved = call(
        system, token, "POST", "/api/billing/payment-methods", json={"payment_method": card_at_stripe(system, card)}
    )
    assert saved.status_code == 201, saved.text
    setting = {"enabled": True, "threshold": 5, "package_id": "basic", "monthly_cap_cents": cap}
    response = call(system, token, "PUT", "/api/billing/auto-recharge", json=setting)
    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is True
    watched(system, token, user_id, 5)
    return token, user_id


def watched(system: System, token: str, user_id: str, threshold: int | None) -> None:
    """Wait until the ledger watches the account at `threshold` (payments tells it through the stream)."""
    url = f"{system.url('ledger')}/api/accounts/{user_id}"
    wait_until(
        lambda: httpx.get(url, headers=bearer(token), timeout=30).json()["recharge_threshold"] == threshold,
        timeout=20,
        what=f"the ledger watching at {threshold}",
    )


def debit(system: System, token: str, user_id: str, amount: int) -> httpx.Response:
    return httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/debits",
        json={"amount": amount, "description": "renders"},
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )


def crossings(system: System, user_id: str) -> list[str]:
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT outcome FROM payments.recharges WHERE user_id = %s ORDER BY created_at", (user_id,)
        ).fetchall()
    return [str(r[0]) for r in rows]


def purchases(system: System, token: str) -> list[tuple[str, int]]:
    listed = call(system, token, "GET", "/api/user/transactions", params={"type": "CREDIT_PURCHASE"}).json()
    return [(t["status"], t["credits"]) for t in listed["transactions"]]


def balance(system: System, token: str, user_id: str) -> int:
    return int(httpx.get(f"{system.url('ledger')}/api/accounts/{user_id}", headers=bearer(token)).json()["balance"])


def test_crossing_below_the_threshold_buys_the_pack_once_and_not_again_within_the_cooldown(system: System) -> None:
    token, user_id = recharging(system)
    assert debit(system, token, user_id, 6).status_code == 201  # 10 → 4: crosses below 5
    wait_until(lambda: balance(system, token, user_id) == 54, timeout=30, what="Basic bought off-session")
    assert purchases(system, token) == [("COMPLETED", 50)]
    assert debit(system, token, user_id, 50).status_code == 201  # 54 → 4: crosses again, within the cooldown
    wait_until(lambda: len(crossings(system, user_id)) == 2, timeout=30, what="the second crossing handled")
    assert crossings(system, user_id) == [
        "bought: succeeded", "skipped: the last automatic purchase was less than 5 minutes ago",
    ]  # fmt: skip
    assert purchases(system, token) == [("COMPLETED", 50)]
    setting = call(system, token, "GET", "/api/billing/auto-recharge").json()
    assert (setting["enabled"], setting["spent_this_month_cents"]) == (True, 999)
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [
        ("USAGE", -50), ("PURCHASE", 50), ("USAGE", -6), ("BONUS", 10),
    ]  # fmt: skip


def test_twenty_debits_crossing_together_buy_once(system: System) -> None:
    token, user_id = recharging(system)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: debit(system, token, user_id, 1), range(20)))
    spent = [a.status_code for a in answers].count(201)
    assert spent >= 10  # more, if the purchase landed before the last of them
    wait_until(lambda: len(crossings(system, user_id)) >= 1, timeout=30, what="the crossing handled")
    wait_until(lambda: purchases(system, token) == [("COMPLETED", 50)], timeout=30, what="one purchase")
    assert crossings(system, user_id) == ["bought: succeeded"]
    wait_until(lambda: balance(system, token, user_id) == 10 + 50 - spent, timeout=30, what="the pack granted")
    assert_converged(system, token, user_id)


def test_a_recharge_that_would_pass_the_monthly_cap_buys_nothing(system: System) -> None:
    token, user_id = recharging(system, cap=500)
    assert debit(system, token, user_id, 6).status_code == 201
    wait_until(lambda: len(crossings(system, user_id)) == 1, timeout=30, what="the crossing handled")
    assert crossings(system, user_id) == ["skipped: the monthly cap of 500 cents would be passed"]
    assert purchases(system, token) == []
    assert call(system, token, "GET", "/api/billing/auto-recharge").json()["enabled"] is True


@pytest.mark.parametrize(
    ("card", "reason", "status"),
    [
        (NEEDS_AUTHENTICATION, "the card needs the customer to authenticate the payment", "CANCELLED"),
        (DECLINED_CARD, "the card was declined: Your card was declined.", "FAILED"),
    ],
    ids=["needs-authentication", "declined"],
)
def test_a_card_that_cannot_be_charged_off_session_turns_auto_recharge_off_with_the_reason(
    system: System, card: str, reason: str, status: str
) -> None:
    token, user_id = recharging(system, card)
    assert debit(system, token, user_id, 6).status_code == 201
    wait_until(
        lambda: call(system, token, "GET", "/api/billing/auto-recharge").json()["enabled"] is False,
        timeout=30,
        what="auto-recharge turned off",
    )
    assert call(system, token, "GET", "/api/billing/auto-recharge").json()["disabled_reason"] == reason
    assert purchases(system, token) == [(status, 50)]
    assert balance(system, token, user_id) == 4
    watched(system, token, user_id, None)  # the ledger stops watching too


def test_auto_recharge_needs_a_saved_card(system: System) -> None:
    token, _ = welcomed(system)
    setting = {"enabled": True, "threshold": 5, "package_id": "basic", "monthly_cap_cents": 5000}
    assert call(system, token, "PUT", "/api/billing/auto-recharge", json=setting).status_code == 409
    assert call(system, token, "GET", "/api/billing/auto-recharge").json()["enabled"] is False
