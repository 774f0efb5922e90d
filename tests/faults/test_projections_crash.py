"""SIGKILL projections while it applies a stream of debits, then start it again: every read model ends equal
to the ledger (each account's balance and credit log), and `creditstream audit` finds nothing to report."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from shared.testing.waiting import wait_until
from tests.conftest import System, system_of_its_own
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.convergence import assert_converged, consumer_state, welcomed

DEBITS_PER_USER = 60


@pytest.fixture(scope="module")
def crashing(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system of its own: projections is killed in it."""
    with system_of_its_own(database_url, tmp_path_factory.mktemp("crashing")) as (running, _):
        yield running


def test_projections_killed_mid_stream_and_restarted_converge_to_the_ledger(crashing: System) -> None:
    system = crashing
    users = [welcomed(system) for _ in range(4)]
    admin = admin_token(system)
    for _, user_id in users:  # enough credit for the burst
        grant = httpx.post(
            f"{system.url('ledger')}/api/accounts/{user_id}/grants",
            json={"amount": 100, "type": "ADMIN_ADJUSTMENT", "description": "burst"},
            headers={**bearer(admin), "Idempotency-Key": str(uuid.uuid4())}, timeout=30,
        )  # fmt: skip
        assert grant.status_code == 201, grant.text
    answers: list[int] = []

    def debit(n: int) -> None:
        token, user_id = users[n % len(users)]
        answer = httpx.post(
            f"{system.url('ledger')}/api/accounts/{user_id}/debits", json={"amount": 1, "description": f"d{n}"},
            headers={**bearer(token), "Idempotency-Key": f"burst-{user_id}-{n}"}, timeout=30,
        )  # fmt: skip
        answers.append(answer.status_code)

    projections = system.services["projections"]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(debit, n) for n in range(DEBITS_PER_USER * len(users))]
        wait_until(lambda: len(answers) >= len(futures) // 3, timeout=60, what="a third of the debits answered")
        before = consumer_state(system, "LEDGER", "projections-ledger")
        assert projections.stop(signal.SIGKILL) == -signal.SIGKILL  # mid-stream: the ledger keeps writing
        for future in futures:
            future.result()
    assert answers.count(201) == len(answers), "every debit was answered by the ledger, which was never down"
    assert before["delivered"] > 0
    projections.start().wait_ready()
    for token, user_id in users:
        view = assert_converged(system, token, user_id, within=60)
        assert view["balance"] == 110 - DEBITS_PER_USER
    audit = system.cli("audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
