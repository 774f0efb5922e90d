"""The first slice, driven over HTTP like a frontend: sign in, get 10 welcome credits, see them."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from shared import bus
from shared.contracts import Envelope
from shared.contracts.identity import UserRegistered
from shared.testing.waiting import wait_until
from tests.conftest import System


def _credits(system: System, token: str) -> dict:
    response = httpx.get(f"{system.url('projections')}/api/user/credits", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_new_user_sees_ten_bonus_credits_after_signing_in(system: System) -> None:
    clerk_id = f"user_{uuid.uuid4().hex[:10]}"
    token = system.token(clerk_id, email="ada@example.com")
    auth = {"Authorization": f"Bearer {token}"}

    first = httpx.post(f"{system.url('identity')}/api/user/sync", headers=auth)
    assert first.status_code == 200, first.text
    assert first.json()["created"] is True
    user = first.json()["user"]
    assert user["clerk_id"] == clerk_id and user["email"] == "ada@example.com"

    wait_until(lambda: _credits(system, token)["balance"] == 10, timeout=10, what="welcome bonus in projections")
    credits = _credits(system, token)
    assert credits["user_id"] == user["id"]
    assert [(e["type"], e["amount"], e["balance_after"]) for e in credits["history"]] == [("BONUS", 10, 10)]

    ledger = httpx.get(f"{system.url('ledger')}/api/accounts/{user['id']}", headers=auth)
    assert ledger.json() == {
        "user_id": user["id"],
        "balance": 10,
        "reserved": 0,
        "available": 10,
        "active": True,
        "lots": [{"id": "2", "amount": 10, "remaining": 10, "held": 0, "expires_at": None}],  # the bonus never expires
        "recharge_threshold": None,
    }


def test_signing_in_again_creates_nothing_and_grants_nothing(system: System) -> None:
    token = system.token(f"user_{uuid.uuid4().hex[:10]}")
    auth = {"Authorization": f"Bearer {token}"}
    first = httpx.post(f"{system.url('identity')}/api/user/sync", headers=auth).json()
    wait_until(lambda: _credits(system, token)["balance"] == 10, timeout=10, what="welcome bonus")

    again = httpx.post(f"{system.url('identity')}/api/user/sync", headers=auth).json()
    assert again["created"] is False
    assert again["user"]["id"] == first["user"]["id"]

    # A second sync must not reach the ledger at all: the ledger account still holds one bonus.
    ledger = httpx.get(f"{system.url('ledger')}/api/accounts/{first['user']['id']}", headers=auth).json()
    assert ledger["balance"] == 10
    assert len(_credits(system, token)["history"]) == 1


def test_every_service_is_healthy_and_ready(system: System) -> None:
    for name, process in system.services.items():
        assert httpx.get(f"{process.url}/healthz").json() == {"status": "ok", "service": name}
        assert httpx.get(f"{process.url}/readyz").json() == {"status": "ready", "service": name}


def test_a_redelivered_registration_grants_nothing(system: System) -> None:
    token = system.token(f"user_{uuid.uuid4().hex[:10]}")
    auth = {"Authorization": f"Bearer {token}"}
    user = httpx.post(f"{system.url('identity')}/api/user/sync", headers=auth).json()["user"]
    wait_until(lambda: _credits(system, token)["balance"] == 10, timeout=10, what="welcome bonus")

    # The same event again, under a new message id so JetStream's duplicate window cannot hide it:
    # what a redelivery after a consumer crash, or a re-published outbox row, looks like.
    registered = Envelope.wrap(
        UserRegistered(
            user_id=user["id"],
            clerk_id=user["clerk_id"],
            email=user["email"],
            first_name=None,
            last_name=None,
            avatar=None,
        ),
        user_id=user["id"],
    )
    asyncio.run(_publish_twice(system, registered))
    wait_until(
        lambda: asyncio.run(_settled(system, ("ledger-identity", "projections-identity"))),
        timeout=15,
        what="both consumers to handle the redelivery",
    )
    wait_until(lambda: asyncio.run(_settled(system, ("projections-ledger",), "LEDGER")), timeout=15)

    ledger = httpx.get(f"{system.url('ledger')}/api/accounts/{user['id']}", headers=auth).json()
    assert ledger["balance"] == 10
    credits = _credits(system, token)
    assert credits["balance"] == 10
    assert [e["type"] for e in credits["history"]] == ["BONUS"]


async def _publish_twice(system: System, envelope: Envelope) -> None:
    nc = await system.connect("identity")  # as identity would
    try:
        js = nc.jetstream()
        for attempt in ("a", "b"):
            await bus.publish(js, envelope.type, envelope.to_bytes(), msg_id=f"{envelope.id}-{attempt}")
    finally:
        await nc.close()


async def _settled(system: System, consumers: tuple[str, ...], stream: str = "IDENTITY") -> bool:
    nc = await system.connect("ops")
    try:
        js = nc.jetstream()
        for name in consumers:
            info = await js.consumer_info(stream, name)
            if info.num_pending or info.num_ack_pending:
                return False
        return True
    finally:
        await nc.close()
