"""What a producer stores, every consumer can apply: the nastiest values the doors accept go through
store → relay → stream → every consumer and read model, and arrive unchanged, with nothing parked."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import psycopg

from shared.contracts import Envelope
from shared.inputs import MAX_JSON_DEPTH, MAX_JSON_STRING, MAX_METADATA_BYTES, MAX_SAFE_INTEGER
from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer, clerk_delivery, clerk_user, new_clerk_id, stream_events
from tests.e2e.convergence import assert_converged, assert_new_user_gets_the_welcome_bonus, parked_messages

# Every kind of character a reader might trip on, except the two the policy refuses (NUL, lone surrogates).
EDGE = "ZWJ\u200d👩‍👩‍👧 RTL\u202e e\u0301 \u2028\u2029 \t\r\n\x01\x7f\\\"'%s{}$1 `--; \U0010ffff ﷽"


def text(length: int) -> str:
    return (EDGE * (length // len(EDGE) + 1))[:length]


def nasty_metadata() -> dict[str, Any]:
    deep: Any = EDGE
    for _ in range(MAX_JSON_DEPTH - 1):
        deep = {EDGE[:7]: deep}
    metadata: dict[str, Any] = {
        "deep": deep,
        EDGE: [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 9.007199254740991e15, 5e-324, -0.5, True, False, None, [], {}],
        "": "",
    }
    used = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())
    metadata["pad"] = ["é" * MAX_JSON_STRING] * ((MAX_METADATA_BYTES - used) // (2 * MAX_JSON_STRING + 8))
    used = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())
    metadata["end"] = "é" * ((MAX_METADATA_BYTES - used - 9) // 2)  # 2 bytes each: right up to the limit
    assert len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode()) >= MAX_METADATA_BYTES - 4
    return metadata


def post(system: System, service: str, path: str, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    headers = {**bearer(token), "Idempotency-Key": uuid.uuid4().hex}
    response = httpx.post(f"{system.url(service)}{path}", json=body, headers=headers, timeout=30)
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_the_nastiest_accepted_values_reach_every_reader_unchanged(system: System) -> None:
    clerk_id = new_clerk_id()
    token = system.token(clerk_id)
    profile = {"first_name": text(200), "last_name": text(200)[::-1], "avatar": "https://x.test/" + text(1985)}
    synced = httpx.post(f"{system.url('identity')}/api/user/sync", json=profile, headers=bearer(token), timeout=30)
    assert synced.status_code == 200, synced.text
    user_id = synced.json()["user"]["id"]
    assert {k: synced.json()["user"][k] for k in profile} == profile
    url = f"{system.url('ledger')}/api/accounts/{user_id}"  # the welcome bonus opens it, through the stream
    wait_until(lambda: httpx.get(url, headers=bearer(token), timeout=30).status_code == 200, timeout=20,
               what="the account opened by the welcome bonus")  # fmt: skip
    assert_converged(system, token, user_id)

    admin = admin_token(system)
    account = f"/api/accounts/{user_id}"
    metadata = nasty_metadata()
    purchase = {"amount": 50, "type": "PURCHASE", "description": text(500), "metadata": metadata}
    granted = post(system, "ledger", f"{account}/grants", admin, purchase)
    assert (granted["description"], granted["metadata"]) == (text(500), metadata)
    post(system, "ledger", f"{account}/debits", token, {"amount": 7, "description": text(499), "metadata": metadata})
    post(system, "ledger", f"/api/admin/accounts/{user_id}/adjustments", admin, {"amount": -2, "reason": text(500)})
    hold = post(system, "ledger", f"{account}/reservations", token, {"amount": 4})
    post(system, "ledger", f"{account}/reservations/{hold['reservation_id']}/capture", token,
         {"amount": 3, "description": text(500)})  # fmt: skip
    other = post(system, "ledger", f"{account}/reservations", token, {"amount": 1})
    post(system, "ledger", f"{account}/reservations/{other['reservation_id']}/release", token, {"reason": text(200)})

    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [
        ("USAGE", -3), ("ADMIN_ADJUSTMENT", -2), ("USAGE", -7), ("PURCHASE", 50), ("BONUS", 10),
    ]  # fmt: skip
    assert [e["description"] for e in view["entries"][:4]] == [text(500), text(500), text(499), text(500)]
    assert view["entries"][2]["metadata"] == metadata == view["entries"][3]["metadata"]

    # On the stream itself: every envelope of this account reads back as its contract.
    on_stream = [Envelope.model_validate(e) for e in stream_events(system, "LEDGER", "ledger.>", user_id)]
    assert [type(e.body()).__name__ for e in on_stream] == [
        "CreditsGranted", "CreditsGranted", "CreditsDebited", "CreditsDebited",
        "CreditsReserved", "CreditsCaptured", "CreditsReserved", "CreditsReleased",
    ]  # fmt: skip
    assert on_stream[2].body().model_dump()["metadata"] == metadata
    assert_projected_profile(system, user_id, profile)

    # The access lists of every service apply a deactivation whose reason is as nasty as allowed.
    post(system, "identity", f"/api/admin/users/{user_id}/deactivate", admin, {"reason": text(500)})
    credits = f"{system.url('projections')}/api/user/credits"
    wait_until(lambda: httpx.get(credits, headers=bearer(token)).status_code == 403, timeout=20, what="refused")
    post(system, "identity", f"/api/admin/users/{user_id}/reactivate", admin)
    wait_until(lambda: httpx.get(credits, headers=bearer(token)).status_code == 200, timeout=20, what="let back in")

    # A Clerk webhook as nasty as the rules allow reaches identity and, through it, projections.
    updated = {"first_name": text(199), "last_name": EDGE, "image_url": text(2000)}
    body, headers = clerk_delivery(
        system.env["CLERK_WEBHOOK_SECRET"], "user.updated", clerk_user(clerk_id, f"{clerk_id}@example.com", **updated)
    )
    assert httpx.post(f"{system.url('identity')}/webhooks/clerk", content=body, headers=headers).status_code == 200
    assert_projected_profile(system, user_id, {"first_name": text(199), "last_name": EDGE, "avatar": text(2000)})

    assert parked_messages(system) == {}
    for name, process in system.services.items():
        assert httpx.get(f"{process.url}/readyz").status_code == 200, name
    assert_new_user_gets_the_welcome_bonus(system)


def assert_projected_profile(system: System, user_id: str, profile: dict[str, str]) -> None:
    def row() -> dict[str, Any] | None:
        with psycopg.connect(system.env["DATABASE_URL"]) as conn:
            found = conn.execute(
                "SELECT first_name, last_name, avatar FROM projections.users WHERE user_id = %s", (user_id,)
            ).fetchone()
        return dict(zip(("first_name", "last_name", "avatar"), found, strict=True)) if found else None

    wait_until(lambda: row() == profile, timeout=20, what="the profile in projections")
