"""The frontend-facing read API after a scripted history over HTTP (sign-in, a purchase at localstripe, an
image generated, a direct debit, a refund): profile, dashboard, credits as of a past moment and by type,
and the read models' status, each equal to what the ledger and payments say."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer, signed_in
from tests.e2e.convergence import all_pages, assert_converged, welcomed
from tests.e2e.stripe_support import paid_pack
from tests.e2e.test_media_images import command, completed
from tests.e2e.test_payment_commands import refund


def read(system: System, token: str, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{system.url('projections')}{path}", params=params, headers=bearer(token), timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def ledger_entries(system: System, token: str, user_id: str) -> list[dict[str, Any]]:
    _, entries = all_pages(f"{system.url('ledger')}/api/accounts/{user_id}/entries", token, "entries")
    return entries


def test_profile_dashboard_and_past_balances_agree_with_the_ledger_and_payments(system: System) -> None:
    token, user_id = welcomed(system)
    admin = admin_token(system)
    tx_id, _ = paid_pack(system, token, admin, "basic")  # 10 + 50
    made = command(system, token, "/api/images/generate", {"prompt": "tide pools", "width": 64, "height": 64})
    assert completed(system, token, made.json()["id"])["status"] == "COMPLETED"  # -3
    wait_until(lambda: read(system, token, "/api/user/credits")["balance"] == 57, timeout=20, what="57 projected")
    between = datetime.now(UTC)
    debit = httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/debits", json={"amount": 5, "description": "export"},
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())}, timeout=30,
    )  # fmt: skip
    assert debit.status_code == 201, debit.text
    assert refund(system, admin, tx_id, str(uuid.uuid4())).status_code == 200  # claws back the 50 → 2
    account = f"{system.url('ledger')}/api/accounts/{user_id}"
    wait_until(lambda: httpx.get(account, headers=bearer(token), timeout=30).json()["balance"] == 2, timeout=20,
               what="the claw-back applied by the ledger")  # fmt: skip
    assert_converged(system, token, user_id)

    def dashboard_caught_up() -> bool:
        board = read(system, token, "/api/user/dashboard")
        return board["counts"]["images"] == 1 and any(a["kind"] == "refund" for a in board["recent_activity"])

    wait_until(dashboard_caught_up, timeout=20, what="the dashboard's read models caught up")
    board = read(system, token, "/api/user/dashboard")
    assert board["account"] == {"balance": 2, "reserved": 0, "available": 2}
    assert board["counts"] == {"images": 1, "videos": 0, "transactions": 1}
    assert board["totals"] == {"credits_bought": 50, "credits_spent": 8, "money_spent_cents": 0}
    entries = ledger_entries(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in board["credit_history"]] == [(e["type"], e["amount"]) for e in entries]
    today = datetime.now(UTC).date().isoformat()
    assert {(u["day"], u["operation"], u["credits"]) for u in board["usage"]} == {
        (today, "image_generation", 3), (today, "other", 5),
    }  # fmt: skip
    kinds = [a["kind"] for a in board["recent_activity"] if not a["notification"]]
    assert kinds[:3] == ["refund", "job_completed", "purchase"]
    notes = [a["message"] for a in board["recent_activity"] if a["notification"]]
    assert "Your balance is low: 2 credits left" in notes  # the refund took available below 5
    assert board["user"]["id"] == user_id and board["subscription"] is None and board["expiring_soon"] == []

    payments = httpx.get(f"{system.url('payments')}/api/user/transactions", headers=bearer(token), timeout=30).json()
    [paid] = [t for t in payments["transactions"] if t["id"] == tx_id]
    profile = read(system, token, "/api/user/profile")
    [projected] = profile["transactions"]
    assert {k: projected[k] for k in ("id", "status", "amount", "currency", "credits")} == {
        k: paid[k] for k in ("id", "status", "amount", "currency", "credits")
    }  # fmt: skip
    assert projected["status"] == "REFUNDED" and profile["account"]["balance"] == 2

    past = read(system, token, "/api/user/credits", at=between.isoformat())
    assert (past["balance"], past["reserved"], past["available"]) == (57, None, None)
    earlier = [e for e in entries if datetime.fromisoformat(e["created_at"]) <= between]
    assert [e["id"] for e in past["history"]] == [e["id"] for e in earlier]
    assert sum(e["amount"] for e in past["history"]) == 57  # the balance then is the sum of the entries to then
    usage = read(system, token, "/api/user/credits", type="USAGE")
    assert [e["amount"] for e in usage["history"]] == [-5, -3] and usage["balance"] == 2


def test_a_profile_appears_only_after_sign_in_and_status_is_for_operators(system: System) -> None:
    stranger, _ = signed_in(system)  # a token, but its user is not projected yet: wait for the welcome
    wait_until(lambda: httpx.get(f"{system.url('projections')}/api/user/profile", headers=bearer(stranger),
                                 timeout=30).status_code == 200, timeout=20, what="the profile projected")  # fmt: skip
    assert httpx.get(f"{system.url('projections')}/api/projections/status", headers=bearer(stranger)).status_code == 403
    admin = admin_token(system)

    def caught_up() -> bool:
        models = read(system, admin, "/api/projections/status")["read_models"]
        return len(models) == 4 and all(m["lag_messages"] == 0 for m in models)

    wait_until(caught_up, timeout=30, what="every read model caught up")
    models = {m["consumer"]: m for m in read(system, admin, "/api/projections/status")["read_models"]}
    assert set(models) == {"projections-identity", "projections-ledger", "projections-payments", "projections-media"}
    for model in models.values():
        assert model["applied_position"] == model["stream_position"] > 0 and model["lag_seconds"] == 0.0
        assert model["dead_letters"] == 0
