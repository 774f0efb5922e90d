"""`creditstream replay projections` while debits keep coming: the read models are rebuilt from sequence 1
beside the live ones and swapped in; afterwards every account equals the ledger (nothing lost, nothing
doubled), reads never failed meanwhile, and the audit is clean."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from shared.testing.waiting import wait_until
from tests.conftest import System, system_of_its_own
from tests.e2e.auth_support import bearer
from tests.e2e.convergence import assert_converged, welcomed


@pytest.fixture(scope="module")
def replayed(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system of its own: the replay rebuilds everything it holds."""
    with system_of_its_own(database_url, tmp_path_factory.mktemp("replayed")) as (running, _):
        yield running


def test_a_replay_during_a_stream_of_debits_swaps_in_an_equal_read_model_and_reads_never_fail(
    replayed: System,
) -> None:
    system = replayed
    users = [welcomed(system) for _ in range(3)]
    stop = threading.Event()
    debits: list[int] = []
    reads: list[int] = []

    def debiting() -> None:
        n = 0
        while not stop.is_set() and n < 9 * len(users):
            token, user_id = users[n % len(users)]
            answer = httpx.post(
                f"{system.url('ledger')}/api/accounts/{user_id}/debits", json={"amount": 1, "description": f"d{n}"},
                headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())}, timeout=30,
            )  # fmt: skip
            debits.append(answer.status_code)
            n += 1

    def reading() -> None:
        while not stop.is_set():
            token, _ = users[len(reads) % len(users)]
            answer = httpx.get(f"{system.url('projections')}/api/user/credits", headers=bearer(token), timeout=30)
            reads.append(answer.status_code)

    workers = [threading.Thread(target=debiting), threading.Thread(target=reading)]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: len(debits) >= 3, timeout=30, what="debits flowing")
        replay = system.cli("replay", "projections")
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert "Rebuilt and swapped in" in replay.stdout
        print(f"\nreplay: {replay.stdout.strip()}")
        during = len(debits)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    assert set(debits) == {201} and set(reads) == {200}, (set(debits), set(reads))
    assert len(reads) > 10 and during >= 3
    for token, user_id in users:
        view = assert_converged(system, token, user_id)
        assert view["balance"] == 10 - sum(1 for e in view["entries"] if e["type"] == "USAGE")
    assert system.cli("audit").returncode == 0
    again = system.cli("replay", "nothing")
    assert again.returncode == 2 and "there is projections" in again.stdout
