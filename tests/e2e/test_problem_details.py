"""Errors are RFC 9457 problem details, and every service publishes its OpenAPI."""

from __future__ import annotations

import httpx

from shared.settings import SERVICES
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
    for name in SERVICES:  # the API services (the media worker serves health checks only)
        process = system.services[name]
        spec = httpx.get(f"{process.url}/openapi.json").json()
        assert spec["info"]["title"] == f"creditstream {name}"
        assert "/healthz" in spec["paths"]
        assert httpx.get(f"{process.url}/docs").status_code == 200


LEDGER_COMMANDS = {
    ("post", "/api/accounts/{user_id}/debits"): ("201", "EntryPublic"),
    ("post", "/api/accounts/{user_id}/grants"): ("201", "EntryPublic"),
    ("post", "/api/accounts/{user_id}/reservations"): ("201", "HoldPublic"),
    ("post", "/api/accounts/{user_id}/reservations/{reservation_id}/capture"): ("200", "HoldPublic"),
    ("post", "/api/accounts/{user_id}/reservations/{reservation_id}/release"): ("200", "HoldPublic"),
    ("post", "/api/admin/accounts/{user_id}/adjustments"): ("201", "EntryPublic"),
}


def test_the_openapi_documents_bearer_auth_and_every_problem_with_its_schema(system: System) -> None:
    for name in SERVICES:  # the API services (the media worker serves health checks only)
        process = system.services[name]
        spec = httpx.get(f"{process.url}/openapi.json").json()
        problem = spec["components"]["schemas"]["Problem"]
        assert {"type", "title", "status", "detail", "instance", "errors"} <= set(problem["properties"]), name
        assert "HTTPValidationError" not in spec["components"]["schemas"]
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                for status, answer in operation["responses"].items():
                    if int(status) >= 400:
                        assert answer["content"] == {
                            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                        }, (name, method, path, status)
                if operation.get("security"):
                    assert {"401", "403"} <= set(operation["responses"]), (name, method, path)
        if name in ("projections", "ledger"):
            assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
                "type": "http",
                "scheme": "bearer",
                "description": "A Clerk session token, or a service token.",
            }


def test_ledger_commands_document_their_answers_their_limit_and_a_required_idempotency_key(system: System) -> None:
    spec = httpx.get(f"{system.url('ledger')}/openapi.json").json()
    for (method, path), (status, model) in LEDGER_COMMANDS.items():
        operation = spec["paths"][path][method]
        answer = operation["responses"][status]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{model}"}, path
        assert {"402", "409", "413", "422"} <= set(operation["responses"]), path
        [key] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert (key["in"], key["required"], key["schema"]["maxLength"]) == ("header", True, 200), path
        assert operation["x-max-body-bytes"] == 65536, path
    debit = spec["components"]["schemas"]["DebitIn"]["properties"]
    assert (debit["description"]["maxLength"], debit["description"]["pattern"]) == (500, "^[^\\x00]*$")
    assert debit["metadata"]["additionalProperties"] == {"$ref": "#/components/schemas/JsonValue"}
    [cursor] = [
        p for p in spec["paths"]["/api/accounts/{user_id}/entries"]["get"]["parameters"] if p["name"] == "cursor"
    ]
    assert (cursor["schema"]["pattern"], cursor["schema"]["maxLength"]) == ("^[A-Za-z0-9_-]*$", 512)
