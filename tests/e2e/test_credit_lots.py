"""Credit in lots over HTTP: a grant that expires, the order credit is spent in, and the unspent part
leaving the balance at its expiry, once, as the ledger and projections both show it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer, stream_events
from tests.e2e.convergence import assert_converged, welcomed


def grant(system: System, admin: str, user_id: str, amount: int, expires_at: datetime | None) -> httpx.Response:
    body: dict[str, Any] = {"amount": amount, "type": "BONUS", "description": "promo"}
    if expires_at is not None:
        body["expires_at"] = expires_at.isoformat()
    headers = {**bearer(admin), "Idempotency-Key": str(uuid.uuid4())}
    return httpx.post(f"{system.url('ledger')}/api/accounts/{user_id}/grants", json=body, headers=headers, timeout=30)


def account(system: System, token: str, user_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{system.url('ledger')}/api/accounts/{user_id}", headers=bearer(token), timeout=30).json())


def test_credit_that_expires_is_spent_first_and_its_unspent_part_leaves_once(system: System) -> None:
    token, user_id = welcomed(system)
    admin = admin_token(system)
    soon = datetime.now(UTC) + timedelta(seconds=3)
    assert grant(system, admin, user_id, 20, soon).status_code == 201
    assert grant(system, admin, user_id, 5, datetime.now(UTC) + timedelta(days=30)).status_code == 201
    spent = httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/debits",
        json={"amount": 8, "description": "renders"},
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert spent.status_code == 201, spent.text
    lots = [
        (lot["amount"], lot["remaining"], lot["expires_at"] is None) for lot in account(system, token, user_id)["lots"]
    ]
    assert lots == [(20, 12, False), (5, 5, False), (10, 10, True)]  # soonest expiry first, the bonus last

    wait_until(lambda: account(system, token, user_id)["balance"] == 15, timeout=20, what="the 12 left to expire")
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [
        ("EXPIRED", -12), ("USAGE", -8), ("BONUS", 5), ("BONUS", 20), ("BONUS", 10),
    ]  # fmt: skip
    assert [(lot["amount"], lot["remaining"]) for lot in account(system, token, user_id)["lots"]] == [(5, 5), (10, 10)]


def test_a_grant_that_would_expire_in_the_past_or_given_a_number_is_refused(system: System) -> None:
    token, user_id = welcomed(system)
    admin = admin_token(system)
    past = grant(system, admin, user_id, 5, datetime.now(UTC) - timedelta(seconds=1))
    assert past.status_code == 422 and "future" in past.text
    headers = {**bearer(admin), "Idempotency-Key": str(uuid.uuid4())}
    numeric = httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/grants",
        json={"amount": 5, "type": "BONUS", "expires_at": 4102444800},
        headers=headers,
        timeout=30,
    )
    assert numeric.status_code == 422
    assert account(system, token, user_id)["balance"] == 10


def test_a_low_balance_and_credit_about_to_expire_are_announced_on_the_stream_once(system: System) -> None:
    token, user_id = welcomed(system)
    admin = admin_token(system)
    for amount in (3, 4):  # available 10 → 7 → 3: crosses below 5 once
        spent = httpx.post(
            f"{system.url('ledger')}/api/accounts/{user_id}/debits",
            json={"amount": amount, "description": "renders"},
            headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())},
            timeout=30,
        )
        assert spent.status_code == 201, spent.text
    soon = datetime.now(UTC) + timedelta(days=2)
    assert grant(system, admin, user_id, 20, soon).status_code == 201

    def announced(subject: str) -> list[dict[str, Any]]:
        return stream_events(system, "LEDGER", subject, user_id)

    wait_until(lambda: len(announced("ledger.balance.low")) == 1, timeout=20, what="the low balance announced")
    wait_until(lambda: len(announced("ledger.credits.expiring")) == 1, timeout=20, what="the coming expiry announced")
    assert [(e["data"]["available"], e["data"]["threshold"]) for e in announced("ledger.balance.low")] == [(3, 5)]
    (expiring,) = announced("ledger.credits.expiring")
    assert expiring["data"]["remaining"] == 20
    assert datetime.fromisoformat(expiring["data"]["expires_at"]) == soon
    assert_converged(system, token, user_id)  # notifications move no credit: the log is unchanged
