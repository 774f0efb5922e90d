"""The projection converges to the ledger: after a mix of grants, debits, refusals, holds, captures,
releases and adjustments, the frontend's balance and history equal the ledger's, entry for entry."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System


def _post(url: str, token: str, body: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
    return httpx.post(url, json=body, headers=headers)


def test_the_frontends_credits_equal_the_ledgers_entry_for_entry(system: System) -> None:
    clerk_id = f"user_{uuid.uuid4().hex[:10]}"
    token, admin = system.token(clerk_id), system.token(f"admin_{uuid.uuid4().hex[:8]}", role="admin")
    auth = {"Authorization": f"Bearer {token}"}
    user = httpx.post(f"{system.url('identity')}/api/user/sync", headers=auth).json()["user"]["id"]
    ledger = f"{system.url('ledger')}/api/accounts/{user}"
    wait_until(lambda: httpx.get(ledger, headers=auth).status_code == 200, timeout=10, what="the account")

    assert (
        _post(f"{ledger}/grants", admin, {"amount": 40, "type": "PURCHASE", "description": "pack"}).status_code == 201
    )
    assert _post(f"{ledger}/debits", token, {"amount": 5, "description": "upload"}).status_code == 201
    refused = _post(f"{ledger}/debits", token, {"amount": 100})
    assert (refused.status_code, refused.json()["balance"], refused.json()["available"]) == (402, 45, 45)
    kept = _post(f"{ledger}/reservations", token, {"amount": 7}).json()
    dropped = _post(f"{ledger}/reservations", token, {"amount": 4}).json()
    assert _post(f"{ledger}/reservations/{kept['reservation_id']}/capture", token, {"amount": 3}).status_code == 200
    assert _post(f"{ledger}/reservations/{dropped['reservation_id']}/release", token).status_code == 200
    adjustment = _post(
        f"{system.url('ledger')}/api/admin/accounts/{user}/adjustments", admin, {"amount": -2, "reason": "goodwill"}
    )
    assert adjustment.status_code == 201

    account = httpx.get(ledger, headers=auth).json()
    assert (account["balance"], account["reserved"], account["available"]) == (40, 0, 40)
    entries = httpx.get(f"{ledger}/entries", headers=auth).json()["entries"]

    def projected() -> dict[str, Any]:
        return httpx.get(f"{system.url('projections')}/api/user/credits", headers=auth).json()

    wait_until(lambda: len(projected()["history"]) == len(entries), timeout=15, what="the projection to catch up")
    credits = projected()
    assert (credits["balance"], credits["reserved"], credits["available"]) == (40, 0, 40)
    ledger_log = [(e["id"], e["type"], e["amount"], e["balance_after"]) for e in entries]
    projected_log = [(e["id"], e["type"], e["amount"], e["balance_after"]) for e in credits["history"]]
    assert projected_log == ledger_log
    assert [(t, a) for _, t, a, _ in projected_log] == [
        ("ADMIN_ADJUSTMENT", -2), ("USAGE", -3), ("USAGE", -5), ("PURCHASE", 40), ("BONUS", 10),
    ]  # fmt: skip
    assert sum(a for _, _, a, _ in projected_log) == credits["balance"]
    assert all(after >= 0 for *_, after in projected_log)
