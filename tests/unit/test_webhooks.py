"""The one way a signed webhook comes in (shared/webhooks.py): nothing is parsed before the signature holds,
a payload the provider's parser refuses is a 400, and a service without the provider's secret answers 503."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

from shared import problems
from shared.webhooks import PayloadError, SignatureError, Verify, configured, verified

parsed: list[Any] = []


def verify(raw: bytes, headers: Mapping[str, str]) -> str:
    if headers.get("x-signature") != "good":
        raise SignatureError("no good signature")
    return "delivery-1"


def parse(payload: Any) -> str:
    parsed.append(payload)
    if not isinstance(payload, dict) or "type" not in payload:
        raise PayloadError("no type")
    return str(payload["type"])


def app(verifier: Verify | None) -> TestClient:
    made = FastAPI()
    problems.install(made)
    made.state.webhook_verify = verifier

    @made.post("/hook")
    async def hook(request: Request, v: Annotated[Verify, Depends(configured("Acme", "ACME_SECRET"))]) -> list[Any]:
        return list(await verified(request, v, parse, "Acme"))

    return TestClient(made)


def test_a_signed_event_comes_in_with_its_delivery_id() -> None:
    answer = app(verify).post("/hook", json={"type": "thing.made"}, headers={"x-signature": "good"})
    assert (answer.status_code, answer.json()) == (200, ["delivery-1", "thing.made"])


def test_nothing_is_parsed_before_the_signature_holds() -> None:
    parsed.clear()
    answer = app(verify).post("/hook", json={"type": "thing.made"}, headers={"x-signature": "forged"})
    assert answer.status_code == 400 and "signature rejected: no good signature" in answer.json()["detail"]
    assert parsed == []


def test_a_payload_the_parser_refuses_is_a_400_naming_the_provider() -> None:
    answer = app(verify).post("/hook", json={"kind": "?"}, headers={"x-signature": "good"})
    assert answer.status_code == 400 and answer.json()["detail"].startswith("Not a Acme event")


def test_without_the_providers_secret_the_route_answers_503_naming_the_setting() -> None:
    answer = app(None).post("/hook", json={"type": "thing.made"}, headers={"x-signature": "good"})
    assert (answer.status_code, answer.json()["detail"]) == (503, "Acme webhooks are not configured (ACME_SECRET).")
