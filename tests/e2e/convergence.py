"""Checks every credit test ends with (this module holds no tests): the frontend's read model equals
the ledger entry for entry, and the LEDGER stream still flows for a brand-new user."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import jwt

from shared.bus import deadletters
from shared.bus.streams import STREAMS
from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import bearer, signed_in

# What an entry is, in both the ledger's history and the projection's: compared field by field.
FIELDS = ("id", "type", "amount", "balance_after", "description", "metadata", "member_id")


def all_pages(url: str, token: str, items: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every page of a paged list, following next_cursor: (the last page, all its `items`)."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(url, params=params, headers=bearer(token), timeout=30).json()
        found += page[items]
        if not (cursor := page["next_cursor"]):
            return page, found


def ledger_view(system: System, token: str, user_id: str) -> dict[str, Any]:
    """The account and its whole history, newest first, from the ledger's event store."""
    url = f"{system.url('ledger')}/api/accounts/{user_id}"
    response = httpx.get(url, headers=bearer(token), timeout=30)
    assert response.status_code == 200, response.text
    account = response.json()
    _, entries = all_pages(f"{url}/entries", token, "entries")
    return {
        "balance": account["balance"],
        "reserved": account["reserved"],
        "entries": [{k: e[k] for k in FIELDS} for e in entries],
    }


def in_an_org(token: str) -> bool:
    """Whether the token is active in an organization (so reads its account, not its user's own)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return bool(claims.get("org_id") or claims.get("o"))


def projected_view(system: System, token: str) -> dict[str, Any]:
    """The token's account as projections show it: its user's own, or (a token active in an organization, an
    admin's: all of its history) the organization's."""
    reads = "/api/org/credits" if in_an_org(token) else "/api/user/credits"
    page, history = all_pages(f"{system.url('projections')}{reads}", token, "history")
    return {
        "balance": page["balance"],
        "reserved": page["reserved"],
        "entries": [{k: e[k] for k in FIELDS} for e in history],
    }


def assert_converged(system: System, token: str, user_id: str, *, within: float = 20) -> dict[str, Any]:
    """Projections equal the ledger for this account; returns the ledger's view."""
    expected = ledger_view(system, token, user_id)
    try:
        wait_until(lambda: projected_view(system, token) == expected, timeout=within, what="projections = ledger")
    except TimeoutError:
        projected = projected_view(system, token)
        for field in ("balance", "reserved"):
            assert projected[field] == expected[field]
        for got, want in zip(projected["entries"], expected["entries"], strict=False):
            assert got == want
        assert len(projected["entries"]) == len(expected["entries"])
    assert expected["balance"] >= 0
    assert sum(e["amount"] for e in expected["entries"]) == expected["balance"]
    assert all(e["balance_after"] >= 0 for e in expected["entries"])
    return expected


def welcomed(system: System) -> tuple[str, str]:
    """A user who just signed in, once their 10 welcome credits show in projections: (token, user id)."""
    token, user_id = signed_in(system)
    url = f"{system.url('projections')}/api/user/credits"
    wait_until(
        lambda: httpx.get(url, headers=bearer(token), timeout=30).json()["balance"] == 10,
        timeout=20,
        what="a new user's welcome bonus in projections",
    )
    return token, user_id


def assert_new_user_gets_the_welcome_bonus(system: System) -> None:
    """The LEDGER stream still reaches projections: a user who signs in now sees their 10 credits."""
    token, user_id = welcomed(system)
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("BONUS", 10)]


def parked_messages(system: System) -> dict[str, int]:
    """Dead-lettered messages per consumer: none, when every reader applied everything."""

    async def count() -> dict[str, int]:
        nc = await system.connect("ops")
        try:
            return dict(await deadletters.counts(nc.jetstream()))
        finally:
            await nc.close()

    return asyncio.run(count())


def consumer_state(system: System, stream: str, durable: str) -> dict[str, int]:
    """A durable consumer's counts: deliveries made (redeliveries included), unacknowledged, not yet delivered."""

    async def info() -> dict[str, int]:
        nc = await system.connect("ops")
        try:
            found = await nc.jetstream().consumer_info(stream, durable)
            return {"delivered": found.delivered.consumer_seq or 0 if found.delivered else 0,
                    "ack_pending": found.num_ack_pending or 0, "pending": found.num_pending or 0}  # fmt: skip
        finally:
            await nc.close()

    return asyncio.run(info())


def stream_sizes(system: System) -> dict[str, int]:
    """How many messages each stream holds."""

    async def sizes() -> dict[str, int]:
        nc = await system.connect("ops")
        try:
            js = nc.jetstream()
            return {name: int((await js.stream_info(name)).state.messages) for name in STREAMS}
        finally:
            await nc.close()

    return asyncio.run(sizes())
