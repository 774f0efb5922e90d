"""Every user endpoint of every running service refuses a bad token with 401, one way at a time.

The tokens are made with the running system's own dev key and changed in exactly one respect, so
each refusal is for the stated reason and not for another one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from shared.scopes import Scope
from shared.service_tokens import DEV_KEY_FILE
from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import DevKey, bearer, dev_claims, service_key, signed_in
from tests.unit.auth_keys import SigningKey, hs256_with, unsigned

# The user endpoints that exist now; payments and media have none yet (their public endpoints
# need no token). Each is (service, method, path); {user} is the signed-in user's id.
USER_ENDPOINTS = [
    ("identity", "POST", "/api/user/sync"),
    ("ledger", "GET", "/api/accounts/{user}"),
    ("projections", "GET", "/api/user/credits"),
]

Forge = Callable[[DevKey], str]


def _now() -> int:
    return int(time.time())


BAD_TOKENS: dict[str, Forge] = {
    "expired": lambda key: key.sign(dev_claims(iat=_now() - 3600, nbf=_now() - 3600, exp=_now() - 600)),
    "not yet valid": lambda key: key.sign(dev_claims(nbf=_now() + 600, exp=_now() + 1200)),
    "wrong signature": lambda key: SigningKey("x").sign(dev_claims(), kid=key.kid),
    "unknown kid": lambda key: SigningKey("x").sign(dev_claims()),
    "alg none": lambda key: unsigned(dev_claims(), {"alg": "none", "typ": "JWT", "kid": key.kid}),
    "hs256 with the public key": lambda key: hs256_with(SigningKey.public_pem_of(key.private), dev_claims(), key.kid),
    "wrong issuer": lambda key: key.sign(dev_claims(iss="https://evil.example.test")),
    "wrong azp": lambda key: key.sign(dev_claims(azp="https://evil.example.test")),
}


def call(system: System, service: str, method: str, path: str, headers: dict[str, str], user: str) -> httpx.Response:
    return httpx.request(method, system.url(service) + path.format(user=user), headers=headers, timeout=30)


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_a_bad_token_is_refused_with_401_by_every_user_endpoint(system: System, case: str) -> None:
    token = BAD_TOKENS[case](DevKey(system))
    _, victim = signed_in(system)
    for service, method, path in USER_ENDPOINTS:
        response = call(system, service, method, path, bearer(token), victim)
        assert response.status_code == 401, f"{case} at {service} {path}: {response.text}"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["title"] == "Unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_request_without_a_bearer_token_is_refused_with_401_by_every_user_endpoint(system: System) -> None:
    _, victim = signed_in(system)
    for service, method, path in USER_ENDPOINTS:
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
            response = call(system, service, method, path, headers, victim)
            assert response.status_code == 401, f"{service} {path} {headers}: {response.text}"
            assert response.json()["detail"] == "A bearer token is required."


def test_the_same_claims_signed_properly_are_accepted(system: System) -> None:
    """The control for the cases above: only the one changed respect made them fail."""
    token = DevKey(system).sign(dev_claims(sub="user_control_case", email="control@example.com"))
    response = httpx.post(f"{system.url('identity')}/api/user/sync", headers=bearer(token), timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["clerk_id"] == "user_control_case"


def test_a_service_token_reads_any_account_but_cannot_sign_in_as_a_user(system: System) -> None:
    _, user_id = signed_in(system)
    token = service_key(system).sign("tests", audience="ledger", scopes=[Scope.LEDGER_READ])
    account = httpx.get(f"{system.url('ledger')}/api/accounts/{user_id}", headers=bearer(token), timeout=30)
    assert account.status_code in (200, 404), account.text  # 404 until the welcome bonus lands
    identity = service_key(system).sign("tests", audience="identity", scopes=[Scope.IDENTITY_READ])
    sync = httpx.post(f"{system.url('identity')}/api/user/sync", headers=bearer(identity), timeout=30)
    assert sync.status_code == 403, sync.text


def test_a_service_token_for_one_service_is_refused_by_another(system: System) -> None:
    ledger = service_key(system).sign("tests", audience="ledger", scopes=[Scope.LEDGER_ADJUST])
    refund = f"{system.url('payments')}/api/admin/transactions/{uuid.uuid4()}/refund"
    body, key = {"reason": "a token made for the ledger"}, {"Idempotency-Key": f"refund-{uuid.uuid4()}"}
    response = httpx.post(refund, json=body, headers={**bearer(ledger), **key}, timeout=30)
    assert response.status_code == 401, response.text
    assert "audience" in response.json()["detail"].lower()
    # The control: payments' own token with the scope gets past auth, to a transaction that does not exist.
    payments = service_key(system).sign("tests", audience="payments", scopes=[Scope.PAYMENTS_REFUND])
    assert httpx.post(refund, json=body, headers={**bearer(payments), **key}, timeout=30).status_code == 404


def test_a_service_token_without_the_scope_is_forbidden_and_changes_nothing(system: System) -> None:
    token, user_id = signed_in(system)
    balance = eventually_balance(system, token, user_id)
    refused = adjust(system, user_id, Scope.LEDGER_READ, Scope.LEDGER_GRANT)
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["scope"] == "ledger:adjust"
    reader = service_key(system).sign("tests", audience="ledger", scopes=[Scope.LEDGER_READ])
    debit = httpx.post(f"{system.url('ledger')}/api/accounts/{user_id}/debits", json={"amount": 1},
                       headers={**bearer(reader), "Idempotency-Key": f"debit-{uuid.uuid4()}"}, timeout=30)  # fmt: skip
    assert (debit.status_code, debit.json().get("scope")) == (403, "ledger:debit"), debit.text
    assert account_of(system, token, user_id)["balance"] == balance
    allowed = adjust(system, user_id, Scope.LEDGER_ADJUST)
    assert allowed.status_code == 201, allowed.text
    assert account_of(system, token, user_id)["balance"] == balance + 5


def adjust(system: System, user_id: str, *scopes: Scope) -> httpx.Response:
    """+5 credits to the account, asked with a ledger token holding `scopes`."""
    token = service_key(system).sign("tests", audience="ledger", scopes=scopes)
    return httpx.post(
        f"{system.url('ledger')}/api/admin/accounts/{user_id}/adjustments",
        json={"amount": 5, "reason": "scope test"},
        headers={**bearer(token), "Idempotency-Key": f"adjust-{uuid.uuid4()}"},
        timeout=30,
    )


def account_of(system: System, token: str, user_id: str) -> dict[str, Any]:
    response = httpx.get(f"{system.url('ledger')}/api/accounts/{user_id}", headers=bearer(token), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def eventually_balance(system: System, token: str, user_id: str) -> int:
    """The balance once the welcome bonus has landed (the account opens with it)."""
    url = f"{system.url('ledger')}/api/accounts/{user_id}"
    wait_until(lambda: httpx.get(url, headers=bearer(token), timeout=30).status_code == 200, timeout=30,
               what="the welcome bonus")  # fmt: skip
    return int(account_of(system, token, user_id)["balance"])


def test_the_running_services_hold_only_the_public_service_key(system: System) -> None:
    public = system.env["SERVICE_JWT_PUBLIC_KEY"]
    assert "PUBLIC KEY" in public and "PRIVATE" not in public
    key_file = Path(system.env["DATA_DIR"]) / DEV_KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    for name, process in system.services.items():
        environ = Path(f"/proc/{process.pid}/environ").read_bytes().decode(errors="replace").split("\0")
        assert f"SERVICE_JWT_PUBLIC_KEY={public}" in environ, name
        assert not any("PRIVATE KEY" in entry or entry.startswith("SERVICE_JWT_PRIVATE_KEY=") for entry in environ), (
            name
        )


def test_a_user_token_claiming_the_service_role_gets_no_privilege(system: System) -> None:
    token = DevKey(system).sign(dev_claims(sub="user_pretender", role="service"))
    response = httpx.get(f"{system.url('identity')}/api/admin/users", headers=bearer(token), timeout=30)
    assert response.status_code == 403, response.text


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"metadata": {"role": "admin"}}, 403),  # a claim a session-token template fills from unsafe metadata
        ({"role": "admin"}, 403),
        ({"public_metadata": {"role": "admin"}}, 200),  # only Clerk's backend writes public metadata
    ],
)
def test_only_public_metadata_makes_a_user_token_an_admin(system: System, claims: dict[str, Any], status: int) -> None:
    clerk_id = f"user_role_{uuid.uuid4().hex[:8]}"
    token = DevKey(system).sign(dev_claims(sub=clerk_id, email=f"{clerk_id}@example.com", **claims))
    response = httpx.get(f"{system.url('identity')}/api/admin/users", headers=bearer(token), timeout=30)
    assert response.status_code == status, response.text


def test_identitys_dev_admin_token_carries_the_role_in_public_metadata(system: System) -> None:
    claims = jwt.decode(system.token("user_dev_admin", role="admin"), options={"verify_signature": False})
    assert claims["public_metadata"] == {"role": "admin"} and "role" not in claims


def test_a_dev_token_carries_the_active_organization_as_clerk_does(system: System) -> None:
    asked = {"clerk_id": "user_orgs", "email": "orgs@example.com", "org_id": "org_2acme", "org_role": "org:admin",
             "org_slug": "acme"}  # fmt: skip
    answer = httpx.post(f"{system.url('identity')}/dev/token", json=asked, timeout=30)
    assert answer.status_code == 200, answer.text
    claims = jwt.decode(answer.json()["token"], options={"verify_signature": False})
    assert (claims["org_id"], claims["org_role"], claims["org_slug"]) == ("org_2acme", "org:admin", "acme")
    plain = httpx.post(f"{system.url('identity')}/dev/token", json={**asked, "org_id": None}, timeout=30)
    assert "org_id" not in jwt.decode(plain.json()["token"], options={"verify_signature": False})
    for bad in ({"org_id": "acme"}, {"org_role": "org:owner"}):
        refused = httpx.post(f"{system.url('identity')}/dev/token", json={**asked, **bad}, timeout=30)
        assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
