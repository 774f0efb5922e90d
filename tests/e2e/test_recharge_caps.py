"""Auto-recharge's monthly cap on the number of recharges: five crossings in one month buy exactly two packs,
each one a notification; the rest say why they bought nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.testing.waiting import wait_until
from tests.conftest import System, system_of_its_own
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.convergence import ledger_view, welcomed
from tests.e2e.stripe_support import card_at_stripe


@pytest.fixture(scope="module")
def recharging(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """No cooldown between automatic purchases (a setting), so only the count cap can stop the third."""
    with system_of_its_own(database_url, tmp_path_factory.mktemp("recharging"), RECHARGE_COOLDOWN_SECONDS="0") as (
        running, _,
    ):  # fmt: skip
        yield running


def ledger(system: System, token: str, path: str, body: dict[str, Any]) -> None:
    headers = {**bearer(token), "Idempotency-Key": str(uuid.uuid4())}
    answer = httpx.post(f"{system.url('ledger')}{path}", json=body, headers=headers, timeout=30)
    assert answer.status_code == 201, answer.text


def activity(system: System, token: str) -> list[dict[str, Any]]:
    board = httpx.get(f"{system.url('projections')}/api/user/dashboard", headers=bearer(token), timeout=30).json()
    return [a for a in board["recent_activity"] if a["kind"].startswith("auto_recharge")]


def test_five_crossings_in_a_month_with_a_cap_of_two_recharges_buy_exactly_two(recharging: System) -> None:
    system = recharging
    token, user_id = welcomed(system)
    billing = f"{system.url('payments')}/api/billing"
    saved = httpx.post(f"{billing}/payment-methods", json={"payment_method": card_at_stripe(system)},
                       headers=bearer(token), timeout=30)  # fmt: skip
    assert saved.status_code == 201, saved.text
    setting = {"enabled": True, "threshold": 5, "package_id": "basic", "monthly_cap_cents": 10_000,
               "monthly_max_recharges": 2}  # fmt: skip
    assert httpx.put(f"{billing}/auto-recharge", json=setting, headers=bearer(token), timeout=30).status_code == 200
    account = f"/api/accounts/{user_id}"
    wait_until(lambda: httpx.get(f"{system.url('ledger')}{account}", headers=bearer(token), timeout=30).json()[
        "recharge_threshold"] == 5, timeout=20, what="the ledger watching")  # fmt: skip
    admin = admin_token(system)
    balance = 10
    for crossing in range(1, 6):
        ledger(system, token, f"{account}/debits", {"amount": balance - 4})  # down to 4: below the threshold
        bought = crossing <= 2

        def told(n: int = crossing) -> bool:
            return len(activity(system, token)) == n

        wait_until(told, timeout=30, what=f"crossing {crossing} told")
        if bought:
            wait_until(lambda: ledger_view(system, token, user_id)["balance"] == 54, timeout=30, what="a pack bought")
        else:  # back above the threshold by hand, for the next crossing
            ledger(system, admin, f"{account}/grants", {"type": "BONUS", "amount": 50, "description": "refill"})
        balance = 54
    said = activity(system, token)
    assert sorted((a["kind"], a["notification"]) for a in said) == sorted(
        [("auto_recharge", True)] * 2 + [("auto_recharge_failed", True)] * 3
    )
    assert {a["message"] for a in said if a["kind"] == "auto_recharge_failed"} == {
        "Auto-recharge bought nothing: the monthly cap of 2 recharges is reached"
    }
    state = httpx.get(f"{billing}/auto-recharge", headers=bearer(token), timeout=30).json()
    assert (state["recharges_this_month"], state["spent_this_month_cents"], state["enabled"]) == (2, 2 * 999, True)
    purchases = [e for e in ledger_view(system, token, user_id)["entries"] if e["type"] == "PURCHASE"]
    assert len(purchases) == 2
