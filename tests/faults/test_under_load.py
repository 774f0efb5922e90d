"""The fault cases of issue 13 under load: while the mix of tests/faults/mix.py runs against
`creditstream up`, each case breaks something for real, then the load stops, the system drains and
tests/faults/verdict.py holds the ledger to the client's record. Each case adds a row to the summary
printed at the end of the run (sent, acknowledged, lost, duplicated, recovery seconds).

CI runs each case with a short load, and of the two longest a lighter form (case 1 kills the three processes
that move money instead of all six; case 6, the cluster, is left to `make test-faults`: the bus-level test
of a node and a leader killed, tests/integration/test_nats_cluster.py, runs every time); `make test-faults`
runs them all, whole, with FAULT_LOAD_SECONDS=30."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from shared.testing.nats import EmbeddedNats, EmbeddedNatsCluster
from shared.testing.postgres import EmbeddedPostgres, fresh_database
from tests.e2e.auth_support import admin_token
from tests.faults import duplicates
from tests.faults.mix import Mix
from tests.faults.probe import Probe
from tests.faults.up_system import ACK_WAIT_SECONDS, PROCESSES, UpSystem, copies, creditstream_up
from tests.faults.verdict import ROWS, Row, judge

LOAD_SECONDS = float(os.environ.get("FAULT_LOAD_SECONDS") or 6)
CLIENTS = int(os.environ.get("FAULT_CLIENTS") or 8)
OUTAGE_SECONDS = 2.0  # how long a crashed PostgreSQL or nats-server stays down
SHORT = LOAD_SECONDS < 30  # `make test`'s run: keeps the whole suite within CI's time
KILLED = ("ledger", "payments", "media-worker") if SHORT else PROCESSES


@pytest.fixture(scope="module")
def infrastructure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[UpSystem, EmbeddedPostgres,
                                                                               EmbeddedNats, Probe]]:  # fmt: skip
    """`creditstream up` on a PostgreSQL and a nats-server of this module's own: the cases crash them."""
    workdir = tmp_path_factory.mktemp("under-load")
    postgres = EmbeddedPostgres(workdir / "pg")
    nats = EmbeddedNats(workdir / "nats").start()
    try:
        with creditstream_up(workdir, postgres.url, nats.url, nats.credentials_file) as system:
            yield system, postgres, nats, Probe(system)
    finally:
        nats.stop()
        postgres.stop()


def under_load(system: UpSystem, case: str, fault: Callable[[Mix], float]) -> Row:
    """Run the mix, apply `fault` (it answers the recovery time) half-way, stop, settle, drain, judge."""

    async def run() -> tuple[Mix, float]:
        mix = Mix(system, CLIENTS)
        await mix.start()
        try:
            await asyncio.sleep(LOAD_SECONDS / 2)
            recovery = await asyncio.to_thread(fault, mix)
            await asyncio.sleep(LOAD_SECONDS / 2)
        finally:
            await mix.stop()
        await mix.finish()
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


def test_every_message_and_webhook_delivered_twice_is_applied_once(
    infrastructure: tuple[UpSystem, EmbeddedPostgres, EmbeddedNats, Probe],
) -> None:
    """First of the cases on this system: it republishes every message the streams hold, and the later
    cases would multiply that (after them, tens of thousands: minutes of catching up, not a fault's).
    Republished stream messages (a new Nats-Msg-Id, the same event: a job request too), consumers frozen
    past their ack wait so what they held is delivered again, and every Stripe and Clerk webhook again."""
    system, _, _, probe = infrastructure
    figures: dict[str, int] = {}

    def duplicate_everything(mix: Mix) -> float:
        since = time.monotonic()
        frozen = [system.kill(name, signal.SIGSTOP) for name in ("projections", "payments", "media-worker", "media")]
        figures["republished"] = asyncio.run(duplicates.republish(system))  # reaching the frozen consumers too
        time.sleep(ACK_WAIT_SECONDS + 1)  # frozen past the ack wait: NATS must deliver what they hold again
        figures["held past the ack wait"] = asyncio.run(duplicates.unacknowledged(system))
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        figures["stripe events"] = duplicates.replay_stripe(system)
        figures["clerk webhooks"] = duplicates.replay_clerk(system, mix.deliveries)
        return probe.recovered(since)

    row = under_load(system, "everything delivered twice", duplicate_everything)
    print(f"\nduplicated: {figures}")
    assert_clean(row, system)
    assert all(figures.values()), figures


def test_every_process_sigkilled_in_turn_is_restarted_by_creditstream_up(
    infrastructure: tuple[UpSystem, EmbeddedPostgres, EmbeddedNats, Probe],
) -> None:
    system, _, _, probe = infrastructure

    def kill_each(_: Mix) -> float:
        slowest = 0.0
        for name in KILLED:
            killed, since = system.kill(name), time.monotonic()
            system.restarted(name, killed)
            slowest = max(slowest, probe.recovered(since))
        return slowest

    row = under_load(system, "SIGKILL each process" if not SHORT else f"SIGKILL {', '.join(KILLED)}", kill_each)
    assert_clean(row, system)
    log = system.log.read_text()
    for name in KILLED:
        assert f"{name} (pid" in log and "was killed by SIGKILL" in log


def test_nats_server_killed_and_restarted_mid_load(
    infrastructure: tuple[UpSystem, EmbeddedPostgres, EmbeddedNats, Probe],
) -> None:
    system, _, nats, probe = infrastructure

    def outage(_: Mix) -> float:
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

    def outage(_: Mix) -> float:
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

        def kill_one_of_each(_: Mix) -> float:
            since = time.monotonic()
            killed = {name: system.kill(name) for name in pair}  # the copies carry on meanwhile
            recovery = probe.recovered(since)
            for name, pid in killed.items():
                system.restarted(name, pid)
            return recovery

        row = under_load(system, "two copies, one of each killed", kill_one_of_each)
    assert_clean(row, system)


@pytest.fixture(scope="module")
def on_a_cluster(
    infrastructure: tuple[UpSystem, EmbeddedPostgres, EmbeddedNats, Probe], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[UpSystem, EmbeddedNatsCluster, Probe]]:
    """`creditstream up` on a three-node NATS cluster (R3 streams, each node `sync_interval: always`) and a
    database of its own in this module's PostgreSQL."""
    _, postgres, _, _ = infrastructure
    workdir = tmp_path_factory.mktemp("cluster")
    cluster = EmbeddedNatsCluster(workdir / "nats").start()
    try:
        with (
            fresh_database(postgres.url) as url,
            creditstream_up(workdir, url, cluster.url, cluster.credentials_file, STREAM_REPLICAS="3") as up,
        ):
            yield up, cluster, Probe(up)
    finally:
        cluster.stop()


@pytest.mark.skipif(SHORT, reason="a cluster under load is `make test-faults`'s (test_nats_cluster.py runs always)")
def test_a_three_node_cluster_loses_a_node_and_then_the_stream_leader(
    on_a_cluster: tuple[UpSystem, EmbeddedNatsCluster, Probe],
) -> None:
    system, cluster, probe = on_a_cluster
    recovery: dict[str, float] = {}
    leaders: list[str] = []

    def kill_a_node_then_the_leader(_: Mix) -> float:
        leader = asyncio.run(cluster.stream_leader("LEDGER"))
        follower = (leader + 1) % len(cluster.nodes)
        since = time.monotonic()
        cluster.nodes[follower].stop(signal.SIGKILL)
        recovery["a node killed"] = probe.recovered(since)
        cluster.nodes[follower].start()
        leader = asyncio.run(cluster.stream_leader("LEDGER"))
        since = time.monotonic()
        cluster.nodes[leader].stop(signal.SIGKILL)
        recovery["the LEDGER leader killed"] = probe.recovered(since)
        elected = asyncio.run(cluster.stream_leader("LEDGER"))
        leaders.extend(str(cluster.nodes[i].server_name) for i in (leader, elected))
        cluster.nodes[leader].start()
        return max(recovery.values())

    row = under_load(system, "3-node cluster: a node, then the leader killed", kill_a_node_then_the_leader)
    print(f"\ncluster: recovery {recovery}, LEDGER leader {leaders[0]} killed, {leaders[1]} elected")
    assert_clean(row, system)
    assert leaders[0] != leaders[1]
