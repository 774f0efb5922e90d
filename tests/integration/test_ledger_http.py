"""The ledger's HTTP API as a frontend and an operator use it (the running system, dev tokens)."""

from __future__ import annotations

import uuid

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System


def _signed_in(system: System) -> tuple[str, dict[str, str]]:
    token = system.token(f"user_{uuid.uuid4().hex[:10]}")
    auth = {"Authorization": f"Bearer {token}"}
    user = httpx.post(f"{system.url('identity')}/api/user/sync", headers=auth).json()["user"]["id"]
    wait_until(
        lambda: httpx.get(f"{system.url('ledger')}/api/accounts/{user}", headers=auth).status_code == 200,
        timeout=30,
        what="welcome bonus",
    )
    return user, auth


def test_a_user_spends_reserves_and_reads_their_own_history(system: System) -> None:
    user, auth = _signed_in(system)
    base = f"{system.url('ledger')}/api/accounts/{user}"
    spent = httpx.post(
        f"{base}/debits", json={"amount": 4, "description": "resize"}, headers={**auth, "Idempotency-Key": "a"}
    )
    assert spent.status_code == 201
    assert (spent.json()["type"], spent.json()["amount"], spent.json()["balance_after"]) == ("USAGE", -4, 6)

    refused = httpx.post(f"{base}/debits", json={"amount": 7}, headers={**auth, "Idempotency-Key": "b"})
    assert refused.status_code == 402 and refused.headers["content-type"] == "application/problem+json"
    assert (refused.json()["balance"], refused.json()["available"]) == (6, 6)

    hold = httpx.post(f"{base}/reservations", json={"amount": 3}, headers={**auth, "Idempotency-Key": "h"})
    assert hold.status_code == 201 and hold.json()["available"] == 3
    assert httpx.get(f"{base}/can-spend", params={"amount": 4}, headers=auth).json()["can_spend"] is False
    rid = hold.json()["reservation_id"]
    captured = httpx.post(
        f"{base}/reservations/{rid}/capture", json={"amount": 2}, headers={**auth, "Idempotency-Key": "c"}
    )
    assert (captured.status_code, captured.json()["balance"], captured.json()["released"]) == (200, 4, 1)

    first = httpx.get(f"{base}/entries", params={"limit": 2}, headers=auth).json()
    assert [(e["type"], e["amount"]) for e in first["entries"]] == [("USAGE", -2), ("USAGE", -4)]
    rest = httpx.get(f"{base}/entries", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth).json()
    assert [(e["type"], e["amount"]) for e in rest["entries"]] == [("BONUS", 10)] and rest["next_cursor"] is None
    bonus = httpx.get(f"{base}/entries", params={"type": "BONUS"}, headers=auth).json()["entries"]
    assert [e["amount"] for e in bonus] == [10]


def test_bad_requests_get_clear_problems_and_change_nothing(system: System) -> None:
    user, auth = _signed_in(system)
    other, _ = _signed_in(system)
    base = f"{system.url('ledger')}/api/accounts/{user}"
    no_key = httpx.post(f"{base}/debits", json={"amount": 1}, headers=auth)
    assert no_key.status_code == 422 and no_key.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    for bad in ({"amount": 0}, {"amount": "lots"}, {"amount": 1.5}, {"amount": 1, "extra": 1}, {}):
        r = httpx.post(f"{base}/debits", json=bad, headers={**auth, "Idempotency-Key": "x"})
        assert r.status_code == 422, (bad, r.text)
    assert httpx.get(f"{system.url('ledger')}/api/accounts/{other}", headers=auth).status_code == 403
    r = httpx.post(
        f"{system.url('ledger')}/api/accounts/{other}/debits",
        json={"amount": 1},
        headers={**auth, "Idempotency-Key": "y"},
    )
    assert r.status_code == 403
    r = httpx.post(f"{base}/grants", json={"amount": 5, "type": "BONUS"}, headers={**auth, "Idempotency-Key": "z"})
    assert r.status_code == 403
    assert httpx.get(f"{system.url('ledger')}/api/accounts/not-a-uuid", headers=auth).status_code == 422
    assert httpx.get(base, headers=auth).json()["balance"] == 10


def test_an_admin_adjustment_records_who_made_it_and_never_overdraws(system: System) -> None:
    user, auth = _signed_in(system)
    admin_token = system.token(f"admin_{uuid.uuid4().hex[:8]}", role="admin")
    admin = {"Authorization": f"Bearer {admin_token}"}
    url = f"{system.url('ledger')}/api/admin/accounts/{user}/adjustments"
    r = httpx.post(url, json={"amount": -3, "reason": "abuse"}, headers={**admin, "Idempotency-Key": "adj-1"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["type"], body["amount"], body["balance_after"], body["description"]) == (
        "ADMIN_ADJUSTMENT",
        -3,
        7,
        "abuse",
    )
    assert body["metadata"]["admin_id"] and body["metadata"]["admin_id"] != user
    over = httpx.post(url, json={"amount": -8, "reason": "too much"}, headers={**admin, "Idempotency-Key": "adj-2"})
    assert over.status_code == 402 and over.json()["available"] == 7
    assert (
        httpx.post(url, json={"amount": 5, "reason": "x"}, headers={**auth, "Idempotency-Key": "adj-3"}).status_code
        == 403
    )
