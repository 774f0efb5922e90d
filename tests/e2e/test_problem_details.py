"""Errors are RFC 9457 problem details, and every service publishes its OpenAPI."""

from __future__ import annotations

import httpx

from tests.conftest import System


def test_an_unknown_route_answers_a_problem(system: System) -> None:
    response = httpx.get(f"{system.url('ledger')}/api/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "Not Found",
                               "instance": "/api/nowhere"}  # fmt: skip


def test_a_missing_token_is_a_401_problem_with_a_bearer_challenge(system: System) -> None:
    response = httpx.get(f"{system.url('projections')}/api/user/credits")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["title"] == "Unauthorized"


def test_invalid_input_is_a_4xx_problem_naming_the_field(system: System) -> None:
    token = system.token("user_problem")
    response = httpx.get(
        f"{system.url('projections')}/api/user/credits",
        params={"limit": 0},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["status"] == 422
    assert [e["loc"] for e in body["errors"]] == [["query", "limit"]]

    bad_cursor = httpx.get(
        f"{system.url('projections')}/api/user/credits",
        params={"cursor": "'; drop table"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert bad_cursor.status_code == 400
    assert bad_cursor.json()["detail"] == "The cursor is not one this API returned."


def test_every_service_serves_its_openapi(system: System) -> None:
    for name, process in system.services.items():
        spec = httpx.get(f"{process.url}/openapi.json").json()
        assert spec["info"]["title"] == f"creditstream {name}"
        assert "/healthz" in spec["paths"]
        assert httpx.get(f"{process.url}/docs").status_code == 200
