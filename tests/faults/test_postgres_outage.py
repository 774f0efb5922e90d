"""PostgreSQL stopped abruptly (immediate shutdown: no checkpoint, as a crash) in the middle of a burst of
debits, then started again: every debit the client saw succeed is in the ledger exactly once, none it saw
refused left a trace, one that got no answer is settled by retrying its key, and the audit is clean."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from shared.testing.postgres import EmbeddedPostgres
from shared.testing.waiting import wait_until
from tests.conftest import System, system_of_its_own
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.convergence import assert_converged, ledger_view, welcomed

BURST = 240
OUTAGE_SECONDS = 2.0


def settled(system: System, token: str, user_id: str, key: str) -> bool:
    again = httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/debits", json={"amount": 1, "description": key},
        headers={**bearer(token), "Idempotency-Key": key}, timeout=30,
    )  # fmt: skip
    return again.status_code == 201


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, EmbeddedPostgres]]:
    """A system on a PostgreSQL of its own: the one this module stops is nobody else's."""
    workdir = tmp_path_factory.mktemp("postgres-outage")
    postgres = EmbeddedPostgres(workdir / "pg")
    try:
        with system_of_its_own(postgres.url, workdir) as (running, _):
            yield running, postgres
    finally:
        postgres.stop()


def test_postgres_crashing_mid_burst_loses_no_answered_debit_and_doubles_none(
    outage: tuple[System, EmbeddedPostgres],
) -> None:
    system, postgres = outage
    users = [welcomed(system) for _ in range(4)]
    admin = admin_token(system)
    for _, user_id in users:
        grant = httpx.post(
            f"{system.url('ledger')}/api/accounts/{user_id}/grants",
            json={"amount": 1000, "type": "ADMIN_ADJUSTMENT", "description": "burst"},
            headers={**bearer(admin), "Idempotency-Key": str(uuid.uuid4())}, timeout=30,
        )  # fmt: skip
        assert grant.status_code == 201, grant.text
    answers: dict[str, int | None] = {}
    lock = threading.Lock()

    def debit(n: int) -> None:
        token, user_id = users[n % len(users)]
        key = f"pg-{n}"
        try:
            status: int | None = httpx.post(
                f"{system.url('ledger')}/api/accounts/{user_id}/debits", json={"amount": 1, "description": key},
                headers={**bearer(token), "Idempotency-Key": key}, timeout=30,
            ).status_code  # fmt: skip
        except httpx.HTTPError:
            status = None
        with lock:
            answers[key] = status

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(debit, n) for n in range(BURST)]
        wait_until(lambda: len(answers) >= BURST // 4, timeout=60, what="a quarter of the burst answered")
        postgres.crash()
        time.sleep(OUTAGE_SECONDS)  # the outage itself: what is measured is what the system does after it
        postgres.restart()
        for future in futures:
            future.result()
    statuses = {s: sum(1 for v in answers.values() if v == s) for s in set(answers.values())}
    print(f"\npostgres outage: answers {statuses}")
    assert set(statuses) <= {201, 503, None}, statuses  # refused for now, or cut off: never a 500

    for n in range(BURST):  # a retry with its key settles every command: applied once, whatever it was told
        wait_until(functools.partial(settled, system, *users[n % len(users)], f"pg-{n}"), timeout=60,
                   what=f"pg-{n} settled by its retry")  # fmt: skip
    for token, user_id in users:
        view = assert_converged(system, token, user_id, within=60)
        debits = [e for e in view["entries"] if e["type"] == "USAGE"]
        assert len(debits) == BURST // len(users)  # each key applied exactly once
        assert len({e["description"] for e in debits}) == len(debits)
        assert view["balance"] == 1010 - len(debits)
    assert ledger_view(system, users[0][0], users[0][1])["balance"] >= 0
    audit = system.cli("audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
