"""Sign-in sync under concurrency: many first sign-ins of one user make one user and one grant."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import bearer, new_clerk_id, outbox_events, stream_events


def test_twenty_parallel_first_syncs_make_one_user_one_event_and_ten_credits(system: System) -> None:
    token = system.token(new_clerk_id(), email="rush@example.com")
    url = f"{system.url('identity')}/api/user/sync"
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=20)) as client, ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: client.post(url, headers=bearer(token)), range(20)))
    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses if r.status_code != 200]
    bodies = [r.json() for r in responses]
    assert sum(b["created"] for b in bodies) == 1
    user_ids = {b["user"]["id"] for b in bodies}
    assert len(user_ids) == 1
    user_id = user_ids.pop()

    assert outbox_events(system, "identity.user.registered", user_id) == 1
    wait_until(
        lambda: len(stream_events(system, "IDENTITY", "identity.user.registered", user_id)) == 1,
        timeout=30,
        what="the registered event on the IDENTITY stream",
    )
    ledger = f"{system.url('ledger')}/api/accounts/{user_id}"
    wait_until(
        lambda: httpx.get(ledger, headers=bearer(token), timeout=30).status_code == 200,
        timeout=30,
        what="the welcome bonus",
    )
    assert httpx.get(ledger, headers=bearer(token), timeout=30).json()["balance"] == 10
    grants = stream_events(system, "LEDGER", "ledger.credits.granted", user_id)
    assert [(g["data"]["entry_type"], g["data"]["amount"]) for g in grants] == [("BONUS", 10)]
