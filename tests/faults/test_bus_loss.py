"""The NATS streams lost entirely (nats-server stopped, its data directory deleted, started empty):
`creditstream streams rebuild` refills them from PostgreSQL with the original event ids, in order; the
consumers bind again and apply nothing twice; new commands flow; the audit is clean."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import httpx
import pytest

from shared.testing.nats import EmbeddedNats
from shared.testing.waiting import wait_until
from tests.conftest import System, system_of_its_own
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.convergence import assert_converged, stream_sizes, welcomed
from tests.e2e.stripe_support import paid_pack
from tests.e2e.test_media_images import command, completed


@pytest.fixture(scope="module")
def lost(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, EmbeddedNats]]:
    with system_of_its_own(database_url, tmp_path_factory.mktemp("bus-loss")) as (running, nats):
        yield running, nats


def debit(system: System, token: str, user_id: str, amount: int) -> None:
    answer = httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/debits", json={"amount": amount, "description": "bus"},
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())}, timeout=30,
    )  # fmt: skip
    assert answer.status_code == 201, answer.text


def test_lost_streams_are_refilled_from_postgres_and_nothing_is_applied_twice(
    lost: tuple[System, EmbeddedNats],
) -> None:
    system, nats = lost
    (first, first_id), (second, second_id) = welcomed(system), welcomed(system)
    paid_pack(system, first, admin_token(system), "basic")  # 60
    debit(system, first, first_id, 7)  # 53
    made = command(system, second, "/api/images/generate", {"prompt": "lost and found", "width": 32, "height": 32})
    assert completed(system, second, made.json()["id"])["status"] == "COMPLETED"  # 7
    account = f"{system.url('ledger')}/api/accounts/{second_id}"
    wait_until(lambda: httpx.get(account, headers=bearer(second), timeout=30).json()["balance"] == 7, timeout=30,
               what="the generation's capture")  # fmt: skip
    users = ((first, first_id), (second, second_id))
    views = {user_id: assert_converged(system, token, user_id) for token, user_id in users}
    assert (views[first_id]["balance"], views[second_id]["balance"]) == (53, 7)
    before = stream_sizes(system)

    nats.stop()
    shutil.rmtree(nats.data_dir / "jetstream")  # the bus is gone: only PostgreSQL remembers
    nats.start()
    rebuilt = system.cli("streams", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "refilled" in rebuilt.stdout
    after = stream_sizes(system)
    for stream in ("IDENTITY", "LEDGER", "PAYMENTS", "MEDIA"):
        assert after[stream] == before[stream], (stream, before, after)  # every event once, none twice

    again = system.cli("streams", "rebuild")
    assert again.returncode == 1 and "Refused" in again.stdout  # never onto streams that hold messages
    for name, process in system.services.items():
        wait_until(process.ready, timeout=60, what=f"{name} ready again")
    debit(system, first, first_id, 3)  # new commands flow through the rebuilt bus
    wait_until(lambda: assert_converged(system, first, first_id)["balance"] == 50, timeout=60, what="50")
    second_view = assert_converged(system, second, second_id)
    assert second_view == views[second_id]  # the republished history changed nothing
    audit = system.cli("audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
