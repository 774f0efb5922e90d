"""Admin user management: search and page through users; deactivate a user and every service
refuses them within seconds (debits included); reactivate and they are let back in."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from shared.auth import user_id_for
from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer, outbox_events, signed_in, stream_events

REFUSAL_DEADLINE = 20  # seconds; the promise is "a few", the machine is shared


def admin(system: System, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, f"{system.url('identity')}/api/admin/users{path}", headers=bearer(token), timeout=30, **kwargs
    )


def debit(system: System, token: str, user_id: str) -> httpx.Response:
    return httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/debits",
        json={"amount": 1, "description": "an image"},
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )


def user_endpoints(system: System, token: str, user_id: str) -> dict[str, int]:
    """Status of one user endpoint per service that has any, for this token."""
    return {
        "identity": httpx.post(
            f"{system.url('identity')}/api/user/sync", headers=bearer(token), timeout=30
        ).status_code,
        "ledger": httpx.get(
            f"{system.url('ledger')}/api/accounts/{user_id}", headers=bearer(token), timeout=30
        ).status_code,
        "projections": httpx.get(
            f"{system.url('projections')}/api/user/credits", headers=bearer(token), timeout=30
        ).status_code,
    }


def test_search_finds_users_by_email_or_name_and_pages_newest_first(system: System) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [signed_in(system, email=f"{tag}.{n}@example.com")[1] for n in range(5)]
    token = admin_token(system)
    pages, cursor = [], None
    while True:
        response = admin(
            system, "GET", "", token, params={"q": tag, "limit": 2, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        pages.append([u["id"] for u in response.json()["users"]])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for page in pages for i in page] == list(reversed(ids))
    assert admin(system, "GET", "", token, params={"q": tag.upper()}).json()["users"][0]["id"] == ids[-1]
    assert admin(system, "GET", "", token, params={"q": "%"}).status_code == 200
    assert admin(system, "GET", "", token, params={"q": f"{tag}-nobody"}).json() == {"users": [], "next_cursor": None}


def test_search_by_name_and_bad_cursors(system: System) -> None:
    token = admin_token(system)
    name = f"Zed{uuid.uuid4().hex[:6]}"
    dev = httpx.post(
        f"{system.url('identity')}/dev/token",
        json={"clerk_id": f"user_{name}", "email": f"{name}@example.com", "first_name": name, "last_name": "Quill"},
        timeout=30,
    ).json()
    httpx.post(f"{system.url('identity')}/api/user/sync", headers=bearer(dev["token"]), timeout=30)
    found = admin(system, "GET", "", token, params={"q": f"{name} quill"}).json()["users"]
    assert [u["id"] for u in found] == [dev["user_id"]]
    bad = admin(system, "GET", "", token, params={"cursor": "not-a-cursor"})
    assert (bad.status_code, bad.json()["title"]) == (400, "Bad Request")
    assert admin(system, "GET", "/not-a-uuid", token).status_code == 422
    assert admin(system, "POST", f"/{uuid.uuid4()}/deactivate", token).status_code == 404


def test_a_deactivated_user_is_refused_everywhere_and_a_reactivated_one_is_let_back_in(system: System) -> None:
    token, user_id = signed_in(system)
    ledger = f"{system.url('ledger')}/api/accounts/{user_id}"
    wait_until(
        lambda: httpx.get(ledger, headers=bearer(token), timeout=30).status_code == 200,
        timeout=30,
        what="the welcome bonus",
    )
    assert debit(system, token, user_id).status_code == 201
    root_clerk = f"admin_{uuid.uuid4().hex[:8]}"
    root, root_id = system.token(root_clerk, role="admin"), user_id_for(root_clerk)

    off = admin(system, "POST", f"/{user_id}/deactivate", root, json={"reason": "chargeback fraud"})
    assert off.status_code == 200, off.text
    assert (off.json()["changed"], off.json()["user"]["is_active"]) == (True, False)
    again = admin(system, "POST", f"/{user_id}/deactivate", root)
    assert again.json()["changed"] is False
    assert outbox_events(system, "identity.user.deactivated", user_id) == 1

    wait_until(
        lambda: set(user_endpoints(system, token, user_id).values()) == {403},
        timeout=REFUSAL_DEADLINE,
        what="every service refusing the deactivated user",
    )
    refused = debit(system, token, user_id)
    assert (refused.status_code, refused.json()["detail"]) == (403, "This account is deactivated.")
    balance = httpx.get(ledger, headers=bearer(root), timeout=30).json()["balance"]
    assert balance == 9, "the refused debit took nothing"
    # A fresh token of the same user is refused as well: it is the account, not the token.
    assert user_endpoints(system, system.token(off.json()["user"]["clerk_id"]), user_id)["ledger"] == 403

    on = admin(system, "POST", f"/{user_id}/reactivate", root)
    assert (on.status_code, on.json()["changed"], on.json()["user"]["is_active"]) == (200, True, True)
    wait_until(
        lambda: set(user_endpoints(system, token, user_id).values()) == {200},
        timeout=REFUSAL_DEADLINE,
        what="every service admitting the reactivated user",
    )
    assert debit(system, token, user_id).status_code == 201
    assert httpx.get(ledger, headers=bearer(root), timeout=30).json()["balance"] == 8
    # The audit trail names the admin who did it.
    events = stream_events(system, "IDENTITY", "identity.user.deactivated", user_id)
    assert [(e["data"]["reason"], e["data"]["by"]) for e in events] == [("chargeback fraud", root_id)]
    back = stream_events(system, "IDENTITY", "identity.user.reactivated", user_id)
    assert [e["data"]["by"] for e in back] == [root_id]


def test_an_admin_cannot_deactivate_themselves(system: System) -> None:
    token = admin_token(system)
    me = httpx.post(f"{system.url('identity')}/api/user/sync", headers=bearer(token), timeout=30).json()["user"]
    response = admin(system, "POST", f"/{me['id']}/deactivate", token)
    assert response.status_code == 409, response.text
    assert me["role"] == "admin"
