"""On a three-node JetStream cluster with R3 streams, killing a node, and then the stream's leader, loses no
acknowledged publish and stores none twice: a publish that fails in the outage is retried with the same
message id until one is acknowledged, and the killed nodes catch up when they come back. A durable
consumer is replicated as its stream is, and consumes on when its own leader is killed."""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck

from shared import bus
from shared.bus import Subscription
from shared.contracts import Envelope
from shared.testing.nats import EmbeddedNatsCluster
from shared.testing.waiting import eventually
from tests.integration.conftest import stream_messages
from tests.integration.test_consumer import deactivated, running

STREAM = "LEDGER"
SUBJECT = "ledger.credits.cluster-test"
COUNT = 300
DURING_OUTAGE = 50  # publishes acknowledged while a node is down, before it is started again


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedNatsCluster]:
    started = EmbeddedNatsCluster(tmp_path / "nats", harness=True).start()
    yield started
    started.stop()


@dataclass
class Outage:
    """A node killed before publish `at`: how long until a publish was acknowledged again (and what it raised
    on the way), who led the stream meanwhile, how long the node took to be current once restarted."""

    what: str
    victim: int
    at: int
    publishing_again: float = 0.0
    raised: list[str] = field(default_factory=list)
    leader_meanwhile: int = -1
    caught_up: float = 0.0


async def test_acknowledged_publishes_survive_a_killed_node_and_a_killed_stream_leader(
    cluster: EmbeddedNatsCluster,
) -> None:
    nc = await bus.connect(cluster.url, "test", cluster.nodes[0].login("tests"))
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js, replicas=3)
        info = await js.stream_info(STREAM)
        assert info.config.num_replicas == 3
        assert info.cluster and len(info.cluster.replicas or []) == 2
        acks: list[PubAck] = []

        await _publish(js, acks, until=COUNT // 4)
        leader = await cluster.stream_leader(STREAM)
        followers = [i for i in range(len(cluster.nodes)) if i != leader]
        # The client's own node if it is a follower, so that one of the two kills makes the client reconnect.
        follower = _node_of(cluster, nc) if _node_of(cluster, nc) in followers else followers[0]
        outages = [await _outage(cluster, js, acks, follower, "a follower killed")]

        await _publish(js, acks, until=COUNT // 2)
        leader = await cluster.stream_leader(STREAM)
        outages.append(await _outage(cluster, js, acks, leader, f"the leader of {STREAM} killed"))

        await _publish(js, acks, until=COUNT)
        messages = await stream_messages(js, STREAM)
        await eventually(lambda: cluster.caught_up(STREAM), within=30, what="all three replicas current")
    finally:
        await nc.close()

    names = [node.server_name for node in cluster.nodes]
    duplicates = sum(1 for ack in acks if ack.duplicate)
    print(f"\nnats cluster: {COUNT} publishes; {duplicates} retries answered as duplicates; "
          f"{nc.stats['reconnects']} client reconnects")  # fmt: skip
    for o in outages:
        print(f"  {o.what} ({names[o.victim]}, before publish {o.at}): publishing again after "
              f"{o.publishing_again:.2f}s, {names[o.leader_meanwhile]} led meanwhile; a current replica "
              f"{o.caught_up:.2f}s after its restart; publish raised: {'; '.join(o.raised) or 'nothing'}")  # fmt: skip

    ids = [f"cluster-test-{i}" for i in range(COUNT)]
    # Each acknowledged at the next sequence and stored once, in publish order: nothing lost, nothing twice.
    assert [ack.seq for ack in acks] == list(range(1, COUNT + 1))
    assert [headers["Nats-Msg-Id"] for _, _, headers in messages] == ids
    assert [data for _, data, _ in messages] == [str(i).encode() for i in range(COUNT)]
    assert outages[1].leader_meanwhile != outages[1].victim  # another node was elected
    assert nc.stats["reconnects"] >= 1


async def test_a_durable_consumer_is_replicated_and_consumes_on_when_its_leader_is_killed(
    cluster: EmbeddedNatsCluster,
) -> None:
    handled: list[str] = []

    async def handle(envelope: Envelope, seq: int) -> None:
        handled.append(envelope.user_id or "")

    nc = await bus.connect(cluster.url, "test", cluster.nodes[0].login("tests"))
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js, replicas=3)
        # `running` awaits the consumer's task at its end: a consumer loop that died fails the test there.
        async with running(js, Subscription("IDENTITY", "cluster-test", ("identity.>",), handle)):
            # No num_replicas given: its stream's three.
            await eventually(lambda: cluster.caught_up("IDENTITY", "cluster-test"), within=10, what="an R3 consumer")
            await _publish_until_acked(js, deactivated("before"))
            await eventually(_equal(handled, ["before"]), within=10, what="the first event handled")

            leader = await cluster.consumer_leader("IDENTITY", "cluster-test")
            cluster.nodes[leader].stop(signal.SIGKILL)
            killed = time.monotonic()
            await _publish_until_acked(js, deactivated("during"))
            await eventually(_equal(handled, ["before", "during"]), within=60, what="the next event handled")
            consuming_again = time.monotonic() - killed
            elected = await cluster.consumer_leader("IDENTITY", "cluster-test")

            cluster.nodes[leader].start()
            await eventually(lambda: cluster.caught_up("IDENTITY", "cluster-test"), within=60, what="its replicas")
    finally:
        await nc.close()
    print(f"\nnats cluster: a consumer's leader killed, an event published after it handled {consuming_again:.2f}s "
          "after the kill")  # fmt: skip
    assert elected != leader


def _equal(handled: list[str], expected: list[str]) -> Callable[[], Awaitable[bool]]:
    async def equal() -> bool:
        return handled == expected

    return equal


async def _outage(cluster: EmbeddedNatsCluster, js: JetStreamContext, acks: list[PubAck], victim: int,
                  what: str) -> Outage:  # fmt: skip
    """Kill `victim`, publish on, start it again and wait until it is a current replica."""
    outage = Outage(what, victim, at=len(acks))
    cluster.nodes[victim].stop(signal.SIGKILL)
    killed = time.monotonic()
    outage.raised = await _publish_one(js, acks)
    outage.publishing_again = time.monotonic() - killed
    outage.leader_meanwhile = await cluster.stream_leader(STREAM)
    await _publish(js, acks, until=outage.at + DURING_OUTAGE)
    cluster.nodes[victim].start()  # same ports, same store_dir
    restarted = time.monotonic()
    await eventually(lambda: cluster.caught_up(STREAM), within=60, what=f"{what}: its replica current again")
    outage.caught_up = time.monotonic() - restarted
    return outage


async def _publish(js: JetStreamContext, acks: list[PubAck], *, until: int) -> None:
    while len(acks) < until:
        await _publish_one(js, acks)


async def _publish_one(js: JetStreamContext, acks: list[PubAck]) -> list[str]:
    """Publish message number len(acks) until it is acknowledged; what the tries before raised."""
    i = len(acks)
    ack, raised = await _until_acked(js, SUBJECT, str(i).encode(), f"cluster-test-{i}")
    acks.append(ack)
    return raised


async def _publish_until_acked(js: JetStreamContext, envelope: Envelope) -> None:
    await _until_acked(js, envelope.type, envelope.to_bytes(), str(envelope.id))


async def _until_acked(js: JetStreamContext, subject: str, payload: bytes, msg_id: str) -> tuple[PubAck, list[str]]:
    raised: list[str] = []
    deadline = time.monotonic() + 60
    while True:
        try:
            return await bus.publish(js, subject, payload, msg_id=msg_id, ack_timeout=1.0), raised
        except (nats.errors.Error, TimeoutError) as exc:
            # Its own retries ran out in the election: the same message id makes another try safe.
            raised.append(f"{type(exc).__name__}: {exc}")
            if time.monotonic() > deadline:
                raise


def _node_of(cluster: EmbeddedNatsCluster, nc: Client) -> int:
    connected = nc.connected_url
    assert connected
    return [node.port for node in cluster.nodes].index(connected.port or 0)
