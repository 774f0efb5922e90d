"""The ledger under concurrency: two ledger processes, one database, one account."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from shared.testing.waiting import wait_until
from tests.integration.test_ledger_support import LedgerCluster, grant, ledger_cluster, stored_events, stream_messages


def _debit(cluster: LedgerCluster, index: int, user_id: str, key: str, amount: int = 1) -> httpx.Response:
    return httpx.post(
        f"{cluster.url(index)}/api/accounts/{user_id}/debits",
        json={"amount": amount, "description": "render", "metadata": {"n": key}},
        headers=cluster.headers(key),
        timeout=60,
    )


def _debited_on_stream(cluster: LedgerCluster, user_id: str) -> list[str]:
    return [
        env.data["idempotency_key"]
        for env, _ in stream_messages(cluster.nats)
        if env.type == "ledger.credits.debited" and env.user_id == user_id
    ]


def test_200_concurrent_debits_over_two_processes_spend_exactly_the_balance(database_url: str, tmp_path: Path) -> None:
    with ledger_cluster(database_url, tmp_path, size=2) as cluster:
        user_id = str(uuid.uuid4())
        grant(cluster, user_id, 50)
        keys = [f"debit-{i}" for i in range(200)]
        with ThreadPoolExecutor(max_workers=32) as pool:
            responses = list(pool.map(lambda ik: _debit(cluster, ik[0] % 2, user_id, ik[1]), enumerate(keys)))

        statuses = Counter(r.status_code for r in responses)
        print(f"\nconcurrency: {dict(statuses)}")
        assert statuses == {201: 50, 402: 150}
        balances_after = sorted(r.json()["balance_after"] for r in responses if r.status_code == 201)
        assert balances_after == list(range(50)), "each success left a distinct balance, down to 0"
        refusals = [r.json() for r in responses if r.status_code == 402]
        assert all(p["balance"] == 0 and p["available"] == 0 and p["amount"] == 1 for p in refusals)

        account = httpx.get(f"{cluster.url(1)}/api/accounts/{user_id}", headers=cluster.headers()).json()
        assert (account["balance"], account["reserved"], account["available"]) == (0, 0, 0)

        events = stored_events(cluster.database_url, user_id)
        usage = [e for e in events if type(e).__name__ == "Debited" and e.entry_type == "USAGE"]
        assert len(usage) == 50
        assert len({e.idempotency_key for e in usage}) == 50
        succeeded = {f"client:{r.json()['idempotency_key']}" for r in responses if r.status_code == 201}
        assert {e.idempotency_key for e in usage} == succeeded

        wait_until(lambda: len(_debited_on_stream(cluster, user_id)) >= 50, timeout=60, what="debits on LEDGER")
        on_stream = _debited_on_stream(cluster, user_id)
        assert len(on_stream) == 50 and set(on_stream) == succeeded


def test_one_debit_retried_20_times_at_once_is_applied_once_with_20_identical_answers(
    database_url: str, tmp_path: Path
) -> None:
    with ledger_cluster(database_url, tmp_path, size=2) as cluster:
        user_id = str(uuid.uuid4())
        grant(cluster, user_id, 10)
        with ThreadPoolExecutor(max_workers=20) as pool:
            responses = list(pool.map(lambda i: _debit(cluster, i % 2, user_id, "same-key", 3), range(20)))

        assert {r.status_code for r in responses} == {201}
        assert len({r.content for r in responses}) == 1, "every answer is the first answer, byte for byte"
        body = responses[0].json()
        assert (body["type"], body["amount"], body["balance_after"]) == ("USAGE", -3, 7)
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 19

        events = stored_events(cluster.database_url, user_id)
        assert [type(e).__name__ for e in events] == ["Opened", "Granted", "Debited"]

        conflict = _debit(cluster, 0, user_id, "same-key", 4)
        assert conflict.status_code == 409
        assert conflict.headers["content-type"] == "application/problem+json"
        assert len(stored_events(cluster.database_url, user_id)) == 3
