"""Every user endpoint of every running service refuses a bad token with 401, one way at a time.

The tokens are made with the running system's own dev key and changed in exactly one respect, so
each refusal is for the stated reason and not for another one."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

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
    token = service_key(system).sign("payments")
    account = httpx.get(f"{system.url('ledger')}/api/accounts/{user_id}", headers=bearer(token), timeout=30)
    assert account.status_code in (200, 404), account.text  # 404 until the welcome bonus lands
    sync = httpx.post(f"{system.url('identity')}/api/user/sync", headers=bearer(token), timeout=30)
    assert sync.status_code == 403, sync.text


def test_a_user_token_claiming_the_service_role_gets_no_privilege(system: System) -> None:
    token = DevKey(system).sign(dev_claims(sub="user_pretender", role="service"))
    response = httpx.get(f"{system.url('identity')}/api/admin/users", headers=bearer(token), timeout=30)
    assert response.status_code == 403, response.text
