"""The auth dependency over HTTP: 401 for a missing or bad bearer, 403 for a deactivated account, and
for a privileged endpoint whose scope the token does not hold."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared import problems
from shared.access import Standing
from shared.auth import CurrentPrincipal, Principal, TokenVerifier, ensure_may_act_for, privileged, user_id_for
from shared.scopes import Scope
from shared.service_tokens import ServiceKey
from tests.unit.auth_keys import ISSUER, PARTY, JwksServer, SigningKey


class DeactivatedSet:
    """A fake of shared.access.AccessList: the table is replaced by a set."""

    def __init__(self) -> None:
        self.user_ids: set[str] = set()
        self.members: dict[tuple[str, str], Standing] = {}

    async def is_deactivated(self, user_id: str) -> bool:
        return user_id in self.user_ids

    async def standing(self, org_id: str, user_id: str) -> Standing:
        return self.members.get((org_id, user_id), Standing(excluded=False, role=None))


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey("clerk")


@pytest.fixture(scope="module")
def service_key() -> ServiceKey:
    return ServiceKey.of_private(SigningKey("svc").private)


@pytest.fixture
def app(key: SigningKey, service_key: ServiceKey) -> Iterator[FastAPI]:
    app = FastAPI()
    problems.install(app)
    app.state.access = DeactivatedSet()

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        return {"user_id": principal.user_id, "role": principal.role}

    @app.get("/org")
    async def org(principal: CurrentPrincipal) -> dict[str, str | None]:
        org = principal.org
        return {"org": org.id if org else None, "role": org.role if org else None}

    @app.get("/admin")
    async def admin(principal: Annotated[Principal, privileged(Scope.LEDGER_ADJUST)]) -> dict[str, str]:
        return {"role": principal.role}

    @app.get("/accounts/{user_id}")
    async def account(user_id: uuid.UUID, principal: CurrentPrincipal) -> dict[str, str]:
        ensure_may_act_for(principal, str(user_id), Scope.LEDGER_READ)
        return {"role": principal.role}

    with JwksServer(key).running() as jwks:
        app.state.verifier = TokenVerifier(
            jwks.url, audience="ledger", issuer=ISSUER, authorized_parties=[PARTY], service_key=service_key
        )
        yield app


def get(app: FastAPI, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    response = TestClient(app).get(path, headers=headers)
    return response.status_code, response.json()


def test_a_request_without_a_bearer_token_is_unauthorized(app: FastAPI) -> None:
    response = TestClient(app).get("/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["detail"] == "A bearer token is required."


def test_a_basic_credential_is_not_a_bearer_token(app: FastAPI) -> None:
    assert get(app, "/me", {"Authorization": "Basic dXNlcjpwYXNz"})[0] == 401
    assert get(app, "/me", {"Authorization": "Bearer "})[0] == 401


def test_a_bad_token_is_unauthorized_with_the_reason(app: FastAPI, key: SigningKey) -> None:
    status, body = get(app, "/me", {"Authorization": f"Bearer {key.sign({}, iss='https://evil.example.test')}"})
    assert status == 401
    assert body["title"] == "Unauthorized" and "issuer" in body["detail"]


def test_a_valid_token_acts_for_its_user(app: FastAPI, key: SigningKey) -> None:
    status, body = get(app, "/me", {"Authorization": f"Bearer {key.sign({'sub': 'user_ada'})}"})
    assert (status, body) == (200, {"user_id": user_id_for("user_ada"), "role": "user"})


def test_a_deactivated_user_is_forbidden(app: FastAPI, key: SigningKey) -> None:
    app.state.access.user_ids.add(user_id_for("user_ada"))
    status, body = get(app, "/me", {"Authorization": f"Bearer {key.sign({'sub': 'user_ada'})}"})
    assert (status, body["detail"]) == (403, "This account is deactivated.")


def test_a_deactivated_admin_is_forbidden_too(app: FastAPI, key: SigningKey) -> None:
    app.state.access.user_ids.add(user_id_for("user_boss"))
    admin = key.sign({"sub": "user_boss", "public_metadata": {"role": "admin"}})
    status, _ = get(app, "/admin", {"Authorization": f"Bearer {admin}"})
    assert status == 403


def test_an_org_token_is_refused_once_identity_said_the_member_was_removed_or_the_org_deleted(
    app: FastAPI, key: SigningKey
) -> None:
    token = {"Authorization": f"Bearer {key.sign({'sub': 'user_ada', 'org_id': 'org_one', 'org_role': 'org:admin'})}"}
    assert get(app, "/org", token) == (200, {"org": "org_one", "role": "org:admin"})
    app.state.access.members[("org_one", user_id_for("user_ada"))] = Standing(excluded=True, role=None)
    status, body = get(app, "/org", token)
    assert (status, body["detail"], body["org_id"]) == (
        403,
        "You are no longer a member of organization org_one.",
        "org_one",
    )
    # Her personal requests are hers still.
    assert get(app, "/me", token)[0] == 403  # the same token names the organization: refused whatever the path


def test_a_role_identity_announced_overrules_the_tokens_older_word(app: FastAPI, key: SigningKey) -> None:
    token = {"Authorization": f"Bearer {key.sign({'sub': 'user_ada', 'org_id': 'org_one', 'org_role': 'org:admin'})}"}
    app.state.access.members[("org_one", user_id_for("user_ada"))] = Standing(excluded=False, role="org:member")
    assert get(app, "/org", token) == (200, {"org": "org_one", "role": "org:member"})
    plain = {"Authorization": f"Bearer {key.sign({'sub': 'user_ada'})}"}
    assert get(app, "/me", plain)[0] == 200


def service(service_key: ServiceKey, *scopes: Scope) -> dict[str, str]:
    return {"Authorization": f"Bearer {service_key.sign('cli', audience='ledger', scopes=scopes)}"}


def test_admin_endpoints_refuse_users_and_admit_admins_and_services_holding_the_scope(
    app: FastAPI, key: SigningKey, service_key: ServiceKey
) -> None:
    assert get(app, "/admin", {"Authorization": f"Bearer {key.sign({})}"})[0] == 403
    for claims in ({"role": "admin"}, {"metadata": {"role": "admin"}}):  # what a user may write themselves
        assert get(app, "/admin", {"Authorization": f"Bearer {key.sign(claims)}"})[0] == 403
    admin = key.sign({"public_metadata": {"role": "admin"}})
    assert get(app, "/admin", {"Authorization": f"Bearer {admin}"}) == (200, {"role": "admin"})
    assert get(app, "/admin", service(service_key, Scope.LEDGER_ADJUST)) == (200, {"role": "service"})


def test_a_service_token_without_the_endpoints_scope_is_forbidden_and_told_which_it_lacks(
    app: FastAPI, service_key: ServiceKey
) -> None:
    for scopes in ((), (Scope.LEDGER_READ, Scope.LEDGER_GRANT)):
        status, body = get(app, "/admin", service(service_key, *scopes))
        assert status == 403
        assert body["scope"] == "ledger:adjust" and "'ledger:adjust'" in body["detail"]


def test_acting_on_another_users_account_needs_an_admin_or_the_operations_scope(
    app: FastAPI, key: SigningKey, service_key: ServiceKey
) -> None:
    own, other = f"/accounts/{user_id_for('user_ada')}", f"/accounts/{user_id_for('user_bob')}"
    ada = {"Authorization": f"Bearer {key.sign({'sub': 'user_ada'})}"}
    assert get(app, own, ada) == (200, {"role": "user"})
    status, body = get(app, other, ada)
    assert (status, body["detail"]) == (403, "You may only act on your own account.")
    admin = {"Authorization": f"Bearer {key.sign({'sub': 'user_boss', 'public_metadata': {'role': 'admin'}})}"}
    assert get(app, other, admin) == (200, {"role": "admin"})
    assert get(app, other, service(service_key, Scope.LEDGER_READ)) == (200, {"role": "service"})
    status, body = get(app, other, service(service_key, Scope.LEDGER_DEBIT))
    assert (status, body["scope"]) == (403, "ledger:read")


def test_a_service_that_has_not_started_answers_503_not_200(app: FastAPI, key: SigningKey) -> None:
    del app.state.access
    assert get(app, "/me", {"Authorization": f"Bearer {key.sign({})}"})[0] == 503
