"""The fault cases of issue 13 under load: while the mix of tests/faults/mix.py runs against
`creditstream up`, each case breaks something for real, then the load stops, the system drains and
tests/faults/verdict.py holds the ledger to the client's record. Each case adds a row to the summary
printed at the end of the run (sent, acknowledged, lost, duplicated, recovery seconds).

CI runs each case with a short load; `make test-faults` runs them with FAULT_LOAD_SECONDS=30."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from shared.testing.servers import EmbeddedNats, EmbeddedPostgres, wait_until
from tests.e2e.auth_support import admin_token, bearer, signed_in
from tests.faults.mix import Mix
from tests.faults.up_system import PROCESSES, UpSystem, copies, creditstream_up
from tests.faults.verdict import ROWS, Row, judge

LOAD_SECONDS = float(os.environ.get("FAULT_LOAD_SECONDS") or 6)
CLIENTS = int(os.environ.get("FAULT_CLIENTS") or 8)
OUTAGE_SECONDS = 2.0  # how long a crashed PostgreSQL or nats-server stays down


class Probe:
    """A debit on an account of its own, followed until projections show it: how long after a fault the
    whole path (a command, its event on the bus, the read model) works again."""

    def __init__(self, system: UpSystem) -> None:
        self.system = system
        self.token, self.user_id = signed_in(system)
        granted = httpx.post(
            f"{system.url('ledger')}/api/accounts/{self.user_id}/grants",
            json={"amount": 1_000_000, "type": "ADMIN_ADJUSTMENT", "description": "probe"},
            headers={**bearer(admin_token(system)), "Idempotency-Key": str(uuid.uuid4())}, timeout=30,
        )  # fmt: skip
        assert granted.status_code == 201, granted.text

    def _debited(self, key: str) -> int | None:
        try:
            answer = httpx.post(
                f"{self.system.url('ledger')}/api/accounts/{self.user_id}/debits", json={"amount": 1},
                headers={**bearer(self.token), "Idempotency-Key": key}, timeout=5,
            )  # fmt: skip
        except httpx.HTTPError:
            return None
        return int(answer.json()["balance_after"]) if answer.status_code == 201 else None

    def _projected(self, balance: int) -> bool:
        try:
            url = f"{self.system.url('projections')}/api/user/credits"
            return bool(httpx.get(url, headers=bearer(self.token), timeout=5).json()["balance"] == balance)
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    def recovered(self, since: float) -> float:
        """Seconds from `since` until a debit made now is answered and seen in projections."""
        key, balance = str(uuid.uuid4()), None

        def debited() -> bool:
            nonlocal balance
            balance = self._debited(key)
            return balance is not None

        wait_until(debited, timeout=120, interval=0.1, what="a probe debit answered")
        assert balance is not None
        wait_until(lambda: self._projected(balance), timeout=120, interval=0.1, what="the probe debit projected")
        return time.monotonic() - since


@pytest.fixture(scope="module")
def infrastructure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[UpSystem, EmbeddedPostgres,
                                                                               EmbeddedNats, Probe]]:  # fmt: skip
    """`creditstream up` on a PostgreSQL and a nats-server of this module's own: the cases crash them."""
    workdir = tmp_path_factory.mktemp("under-load")
    postgres = EmbeddedPostgres(workdir / "pg")
    nats = EmbeddedNats(workdir / "nats").start()
    try:
        with creditstream_up(workdir, postgres.url, nats.url) as system:
            yield system, postgres, nats, Probe(system)
    finally:
        nats.stop()
        postgres.stop()


def under_load(system: UpSystem, case: str, fault: Callable[[], float]) -> Row:
    """Run the mix, apply `fault` (it answers the recovery time) half-way, stop, settle, drain, judge."""

    async def run() -> tuple[Mix, float]:
        mix = Mix(system, CLIENTS)
        await mix.start()
        try:
            await asyncio.sleep(LOAD_SECONDS / 2)
            recovery = await asyncio.to_thread(fault)
            await asyncio.sleep(LOAD_SECONDS / 2)
        finally:
            await mix.stop()
        try:
            await mix.settle()
            await mix.release_settled_holds()
        finally:
            await mix.close()
        return mix, recovery

    mix, recovery = asyncio.run(run())
    row = judge(system, mix, Row(case, recovery=recovery), admin_token(system))
    ROWS.append(row)
    return row


def assert_clean(row: Row, system: UpSystem) -> None:
    print(f"\n{row.case}: {dict(row.answers)}")
    assert not row.problems, "\n".join(row.problems[:20]) + "\n--- creditstream up ---\n" + system.tail()
    assert row.lost == row.duplicated == row.leaked == 0
    assert row.acknowledged > 0


def test_every_process_sigkilled_in_turn_is_restarted_by_creditstream_up(
    infrastructure: tuple[UpSystem, EmbeddedPostgres, EmbeddedNats, Probe],
) -> None:
    system, _, _, probe = infrastructure

    def kill_each() -> float:
        slowest = 0.0
        for name in PROCESSES:
            killed, since = system.kill(name), time.monotonic()
            system.restarted(name, killed)
            slowest = max(slowest, probe.recovered(since))
        return slowest

    row = under_load(system, "SIGKILL each process", kill_each)
    assert_clean(row, system)
    log = system.log.read_text()
    for name in PROCESSES:
        assert f"{name} (pid" in log and "was killed by SIGKILL" in log


def test_nats_server_killed_and_restarted_mid_load(
    infrastructure: tuple[UpSystem, EmbeddedPostgres, EmbeddedNats, Probe],
) -> None:
    system, _, nats, probe = infrastructure

    def outage() -> float:
        nats.stop(signal.SIGKILL)
        since = time.monotonic()
        time.sleep(OUTAGE_SECONDS)  # the outage itself: what is measured is what follows it
        nats.start()
        return probe.recovered(since)

    assert_clean(under_load(system, "nats-server SIGKILLed, restarted", outage), system)


def test_postgres_crashed_and_restarted_mid_load(
    infrastructure: tuple[UpSystem, EmbeddedPostgres, EmbeddedNats, Probe],
) -> None:
    system, postgres, _, probe = infrastructure

    def outage() -> float:
        postgres.crash()
        since = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        postgres.restart()
        return probe.recovered(since)

    assert_clean(under_load(system, "PostgreSQL immediate stop, restarted", outage), system)


def test_two_copies_of_ledger_payments_and_worker_one_of_each_killed(
    infrastructure: tuple[UpSystem, EmbeddedPostgres, EmbeddedNats, Probe],
) -> None:
    system, _, _, probe = infrastructure
    pair = ("ledger", "payments", "media-worker")
    with copies(system, *pair):

        def kill_one_of_each() -> float:
            since = time.monotonic()
            killed = {name: system.kill(name) for name in pair}  # the copies carry on meanwhile
            recovery = probe.recovered(since)
            for name, pid in killed.items():
                system.restarted(name, pid)
            return recovery

        row = under_load(system, "two copies, one of each killed", kill_one_of_each)
    assert_clean(row, system)
