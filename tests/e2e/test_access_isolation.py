"""User A can neither read nor spend for user B on any service endpoint that exists, and nothing of
B's changes when A tries. (Payments and media have no user endpoints yet; projections' user
endpoints take no user id: they answer for the token's user, which is asserted here too.)"""

from __future__ import annotations

import uuid

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer, signed_in

# Every ledger endpoint that takes a user id, with a body a legitimate owner could send.
LEDGER_USER_ENDPOINTS = [
    ("GET", "/api/accounts/{user}", None),
    ("GET", "/api/accounts/{user}/can-spend?amount=1", None),
    ("GET", "/api/accounts/{user}/entries", None),
    ("POST", "/api/accounts/{user}/debits", {"amount": 1, "description": "A spends B's credits"}),
    ("POST", "/api/accounts/{user}/reservations", {"amount": 1}),
    ("POST", "/api/accounts/{user}/reservations/{reservation}/capture", {}),
    ("POST", "/api/accounts/{user}/reservations/{reservation}/release", {}),
]
PRIVILEGED_ENDPOINTS = [
    ("ledger", "POST", "/api/accounts/{user}/grants", {"amount": 5, "type": "BONUS"}),
    ("ledger", "POST", "/api/admin/accounts/{user}/adjustments", {"amount": 5, "reason": "A helps himself"}),
    ("identity", "GET", "/api/admin/users", None),
    ("identity", "GET", "/api/admin/users/{user}", None),
    ("identity", "POST", "/api/admin/users/{user}/deactivate", {"reason": "A dislikes B"}),
    ("identity", "POST", "/api/admin/users/{user}/reactivate", None),
]


def account(system: System, user_id: str) -> dict:
    """B's account and history, as an admin sees them."""
    headers = bearer(admin_token(system))
    ledger = system.url("ledger")
    state = httpx.get(f"{ledger}/api/accounts/{user_id}", headers=headers, timeout=30).json()
    entries = httpx.get(f"{ledger}/api/accounts/{user_id}/entries", headers=headers, timeout=30).json()
    return {"account": state, "entries": entries}


def welcomed(system: System, token: str, user_id: str) -> None:
    url = f"{system.url('ledger')}/api/accounts/{user_id}"
    wait_until(
        lambda: httpx.get(url, headers=bearer(token), timeout=30).status_code == 200,
        timeout=30,
        what="the welcome bonus",
    )


def test_user_a_cannot_read_or_spend_for_user_b_on_the_ledger(system: System) -> None:
    token_a, _ = signed_in(system)
    token_b, user_b = signed_in(system)
    welcomed(system, token_b, user_b)
    before = account(system, user_b)
    assert before["account"]["balance"] == 10
    for method, path, body in LEDGER_USER_ENDPOINTS:
        url = system.url("ledger") + path.format(user=user_b, reservation=uuid.uuid4())
        headers = {**bearer(token_a), "Idempotency-Key": f"isolation-{uuid.uuid4()}"}
        response = httpx.request(method, url, json=body, headers=headers, timeout=30)
        assert response.status_code == 403, f"{method} {path}: {response.status_code} {response.text}"
        assert response.json()["detail"] == "You may only act on your own account."
    assert account(system, user_b) == before


def test_a_user_is_refused_by_every_admin_and_service_endpoint(system: System) -> None:
    token_a, _ = signed_in(system)
    token_b, user_b = signed_in(system)
    welcomed(system, token_b, user_b)
    before = account(system, user_b)
    for service, method, path, body in PRIVILEGED_ENDPOINTS:
        url = system.url(service) + path.format(user=user_b)
        headers = {**bearer(token_a), "Idempotency-Key": f"isolation-{uuid.uuid4()}"}
        response = httpx.request(method, url, json=body, headers=headers, timeout=30)
        assert response.status_code == 403, f"{method} {path}: {response.status_code} {response.text}"
    assert account(system, user_b) == before
    user = httpx.get(
        f"{system.url('identity')}/api/admin/users/{user_b}", headers=bearer(admin_token(system)), timeout=30
    ).json()
    assert user["is_active"] is True


def test_projections_answer_only_for_the_tokens_user(system: System) -> None:
    token_a, user_a = signed_in(system)
    token_b, user_b = signed_in(system)
    welcomed(system, token_b, user_b)
    url = f"{system.url('projections')}/api/user/credits"
    mine = httpx.get(url, headers=bearer(token_a), params={"user_id": user_b}, timeout=30).json()
    assert mine["user_id"] == user_a
