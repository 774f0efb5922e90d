"""SIGKILL the ledger during a burst of debits: nothing that was answered is lost, nothing unanswered
is half-applied, and after a restart the store and the LEDGER stream agree exactly."""

from __future__ import annotations

import signal
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from shared.testing.waiting import wait_until
from tests.integration.test_ledger_support import grant, ledger_cluster, stored_events, stream_messages

BURST = 400


def test_a_ledger_killed_mid_burst_loses_no_answered_debit_and_half_applies_none(
    database_url: str, tmp_path: Path
) -> None:
    with ledger_cluster(database_url, tmp_path) as cluster:
        user = str(uuid.uuid4())
        grant(cluster, user, 100_000)
        headers = cluster.headers()
        answers: dict[str, int | None] = {}
        lock = threading.Lock()

        def debit(key: str) -> None:
            try:
                r = httpx.post(
                    f"{cluster.url()}/api/accounts/{user}/debits",
                    json={"amount": 1, "description": "burst"},
                    headers={**headers, "Idempotency-Key": key},
                    timeout=30,
                )
                status: int | None = r.status_code
            except httpx.HTTPError:
                status = None
            with lock:
                answers[key] = status

        keys = [f"burst-{i}" for i in range(BURST)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            for key in keys:
                pool.submit(debit, key)
            wait_until(lambda: len(answers) >= BURST // 4, timeout=120, what="a quarter of the burst answered")
            cluster.processes[0].stop(signal.SIGKILL)
        statuses = Counter(answers.values())
        print(f"\ncrash: answers before/at the kill {dict(statuses)}")
        assert statuses[201] >= BURST // 4 and None in statuses, "the kill landed mid-burst"
        assert set(statuses) <= {201, None}

        cluster.restart(0)

        def debits_in_store() -> list[str]:
            events = stored_events(cluster.database_url, user)
            return [e.idempotency_key for e in events if type(e).__name__ == "Debited"]

        def debits_on_stream() -> list[str]:
            messages = stream_messages(cluster.nats)
            return [m.data["idempotency_key"] for m, _ in messages if m.type == "ledger.credits.debited"]

        in_store = debits_in_store()
        wait_until(lambda: len(debits_on_stream()) >= len(in_store), timeout=60, what="the relay catching up")
        on_stream = debits_on_stream()
        assert Counter(in_store) == Counter(on_stream), "store and stream agree, each debit once"
        assert max(Counter(in_store).values()) == 1
        answered = {f"client:{k}" for k, s in answers.items() if s == 201}
        assert answered <= set(in_store), "every debit that got a 201 survived the kill"
        account = httpx.get(f"{cluster.url()}/api/accounts/{user}", headers=headers).json()
        assert account["balance"] == 100_000 - len(in_store)

        # Clients retry what got no answer: each is applied once, whether or not it was before.
        for key in [k for k, s in answers.items() if s is None]:
            r = httpx.post(
                f"{cluster.url()}/api/accounts/{user}/debits",
                json={"amount": 1, "description": "burst"},
                headers={**headers, "Idempotency-Key": key},
                timeout=30,
            )
            assert r.status_code == 201, r.text
        final = debits_in_store()
        assert len(final) == len(set(final)) == len(answers)
        account = httpx.get(f"{cluster.url()}/api/accounts/{user}", headers=headers).json()
        assert account["balance"] == 100_000 - len(answers)
