"""Clerk webhooks: signed deliveries apply once; anything unsigned, stale or forged is refused with
400 before it is parsed, and leaves nothing behind."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx

from shared.auth import user_id_for
from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import (
    admin_token,
    bearer,
    clerk_delivery,
    clerk_user,
    new_clerk_id,
    outbox_events,
    stream_events,
)


def post(system: System, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{system.url('identity')}/webhooks/clerk", content=body, headers=headers, timeout=30)


def stored_user(system: System, clerk_id: str) -> dict | None:
    response = httpx.get(
        f"{system.url('identity')}/api/admin/users/{user_id_for(clerk_id)}",
        headers=bearer(admin_token(system)),
        timeout=30,
    )
    assert response.status_code in (200, 404), response.text
    return response.json() if response.status_code == 200 else None


def secret(system: System) -> str:
    return system.env["CLERK_WEBHOOK_SECRET"]


def test_a_signed_user_created_event_creates_the_user_once(system: System) -> None:
    clerk_id = new_clerk_id()
    body, headers = clerk_delivery(secret(system), "user.created", clerk_user(clerk_id, "grace@example.com"))
    first = post(system, body, headers)
    assert (first.status_code, first.json()) == (200, {"type": "user.created", "duplicate": False})
    user = stored_user(system, clerk_id)
    assert user is not None and (user["email"], user["is_active"]) == ("grace@example.com", True)

    replay = post(system, body, headers)
    assert (replay.status_code, replay.json()) == (200, {"type": "user.created", "duplicate": True})
    assert outbox_events(system, "identity.user.registered", user["id"]) == 1
    wait_until(
        lambda: len(stream_events(system, "IDENTITY", "identity.user.registered", user["id"])) == 1,
        timeout=30,
        what="one registered event on the stream",
    )


def test_a_tampered_body_is_refused_and_stores_nothing(system: System) -> None:
    clerk_id = new_clerk_id()
    body, headers = clerk_delivery(secret(system), "user.created", clerk_user(clerk_id, "eve@example.com"))
    tampered = body.replace(b"eve@example.com", b"mallory@example.com")
    assert_refused(system, tampered, headers, clerk_id)


def test_an_old_timestamp_is_refused_and_stores_nothing(system: System) -> None:
    clerk_id = new_clerk_id()
    stale = datetime.now(UTC) - timedelta(minutes=10)
    body, headers = clerk_delivery(secret(system), "user.created", clerk_user(clerk_id, "old@example.com"), at=stale)
    assert_refused(system, body, headers, clerk_id)


def test_a_delivery_signed_with_another_secret_is_refused_and_stores_nothing(system: System) -> None:
    clerk_id = new_clerk_id()
    wrong = "whsec_" + base64.b64encode(b"not-the-secret-this-server-uses").decode()
    body, headers = clerk_delivery(wrong, "user.created", clerk_user(clerk_id, "wrong@example.com"))
    assert_refused(system, body, headers, clerk_id)


def test_a_delivery_without_signature_headers_is_refused(system: System) -> None:
    clerk_id = new_clerk_id()
    body, _ = clerk_delivery(secret(system), "user.created", clerk_user(clerk_id, "bare@example.com"))
    assert_refused(system, body, {"content-type": "application/json"}, clerk_id)


def assert_refused(system: System, body: bytes, headers: dict[str, str], clerk_id: str) -> None:
    response = post(system, body, headers)
    assert response.status_code == 400, response.text
    assert response.json()["title"] == "Bad Request"
    assert "signature" in response.json()["detail"].lower()
    assert stored_user(system, clerk_id) is None
    assert outbox_events(system, "identity.user.registered", user_id_for(clerk_id)) == 0


def test_user_updated_changes_the_profile_and_publishes_one_update(system: System) -> None:
    clerk_id = new_clerk_id()
    post(system, *clerk_delivery(secret(system), "user.created", clerk_user(clerk_id, "ann@example.com")))
    changed = clerk_user(clerk_id, "ann.new@example.com", first_name="Ann", last_name="Lee")
    body, headers = clerk_delivery(secret(system), "user.updated", changed)
    assert post(system, body, headers).json() == {"type": "user.updated", "duplicate": False}
    assert post(system, body, headers).json() == {"type": "user.updated", "duplicate": True}
    user = stored_user(system, clerk_id)
    assert user is not None
    assert (user["email"], user["first_name"], user["last_name"]) == ("ann.new@example.com", "Ann", "Lee")
    assert outbox_events(system, "identity.user.updated", user["id"]) == 1


def test_user_deleted_deactivates_the_user_and_their_tokens(system: System) -> None:
    clerk_id = new_clerk_id()
    token = system.token(clerk_id)
    assert httpx.post(f"{system.url('identity')}/api/user/sync", headers=bearer(token), timeout=30).status_code == 200
    body, headers = clerk_delivery(secret(system), "user.deleted", {"id": clerk_id, "object": "user", "deleted": True})
    assert post(system, body, headers).json() == {"type": "user.deleted", "duplicate": False}
    user = stored_user(system, clerk_id)
    assert user is not None and user["is_active"] is False
    assert outbox_events(system, "identity.user.deactivated", user["id"]) == 1
    credits = f"{system.url('projections')}/api/user/credits"
    wait_until(
        lambda: httpx.get(credits, headers=bearer(token), timeout=30).status_code == 403,
        timeout=20,
        what="the deleted user's token refused",
    )


def test_a_signed_but_malformed_event_is_a_400_and_not_recorded(system: System) -> None:
    body, headers = clerk_delivery(secret(system), "user.created", {"object": "user"})
    response = post(system, body, headers)
    assert response.status_code == 400, response.text
    assert "no user id" in response.json()["detail"]
