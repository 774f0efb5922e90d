"""deploy/nats/ run for real: nats-server started on a copy of the deploy config itself (its certificates,
data and ports on this machine, every other line as deployed; each user's password in its environment as
compose gives it). A client needs the CA and its own user's password; the users' permissions hold over TLS;
monitoring answers on the loopback only; `creditstream streams ensure` makes the streams as ops; a real
service connects over TLS and is ready. The cluster config lets a node route only with a certificate of
the cluster's own CA."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest
from nats.aio.client import Client

from shared import bus, db_roles, migrations
from shared.bus import Login
from shared.bus.connection import tls_context
from shared.bus.users import OPS
from shared.testing.postgres import fresh_database
from shared.testing.servers import ServiceProcess, service_env
from shared.testing.tls import TlsFiles, make_tls_files
from shared.testing.waiting import free_port, port_open, stop, wait_until
from tests import deploy_files
from tests.deploy_files import CLUSTER, SINGLE

NATS_SERVER = Path(sys.executable).parent / "nats-server"
SUBJECT = "payments.payment.succeeded"


@dataclass
class Deployed:
    """nats-server on the deploy config: where it listens, its CA, its users' passwords."""

    url: str
    monitor_port: int
    tls: TlsFiles
    passwords: dict[str, str]
    process: subprocess.Popen[bytes]

    def login(self, user: str) -> Login:
        return Login.of(user, self.passwords[user], ca=self.tls.ca)

    async def connect(self, user: str) -> Client:
        return await bus.connect(self.url, f"test-{user}", self.login(user))

    def env(self, user: str) -> dict[str, str]:
        """What a process running as `user` is given to reach it."""
        return {
            "NATS_URL": self.url,
            "NATS_USER": user,
            "NATS_PASSWORD": self.passwords[user],
            "NATS_TLS_CA": str(self.tls.ca),
        }


def start_nats(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([str(NATS_SERVER), "-c", str(config)], env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    directory = tmp_path_factory.mktemp("nats-tls")
    tls = make_tls_files(directory / "tls")
    port, monitor = free_port(), free_port()
    config = deploy_files.local_copy(SINGLE.read_text(), directory, tls, client_port=port, monitor_port=monitor)
    passwords = deploy_files.passwords()
    # The environment compose gives its nats service, from an operator's NATS_PASSWORD_<USER>.
    env = {"PATH": os.environ.get("PATH", "")} | deploy_files.compose_env("nats", deploy_files.host_env(passwords))
    process = start_nats(config, env, directory / "nats.log")
    try:
        wait_until(lambda: port_open(port) or process.poll() is not None, timeout=15, what="nats-server")
        assert process.poll() is None, (directory / "nats.log").read_text()
        yield Deployed(f"tls://127.0.0.1:{port}", monitor, tls, passwords, process)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def streams_made(deployed: Deployed) -> subprocess.CompletedProcess[str]:
    """`creditstream streams ensure` as ops over TLS, as the compose `streams` service and the Kubernetes Job run it."""
    env = {**os.environ, **deployed.env(OPS), "STREAM_REPLICAS": "1"}
    cli = Path(sys.executable).parent / "creditstream"
    return subprocess.run(
        [str(cli), "streams", "ensure"], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_streams_ensure_makes_every_stream_as_ops_over_tls(
    deployed: Deployed, streams_made: subprocess.CompletedProcess[str]
) -> None:
    assert streams_made.returncode == 0, streams_made.stdout + streams_made.stderr
    assert "PAYMENTS (1 replicas)" in streams_made.stdout
    nc = await deployed.connect(OPS)
    try:
        names = {info.config.name for info in await nc.jetstream().streams_info()}
        assert names == set(bus.STREAMS)
    finally:
        await nc.close()


async def payments_stored(deployed: Deployed) -> int:
    nc = await deployed.connect(OPS)
    try:
        return int((await nc.jetstream().stream_info("PAYMENTS")).state.messages)
    finally:
        await nc.close()


async def test_over_tls_a_user_publishes_its_own_events_and_no_one_elses(
    deployed: Deployed, streams_made: subprocess.CompletedProcess[str]
) -> None:
    assert streams_made.returncode == 0
    before = await payments_stored(deployed)
    payments = await deployed.connect("payments")
    try:
        ack = await payments.jetstream().publish(SUBJECT, b"{}", headers={"Nats-Msg-Id": os.urandom(8).hex()})
        assert (ack.stream, bus.refusals(payments).count) == ("PAYMENTS", 0)
    finally:
        await payments.close()
    media = await deployed.connect("media")
    try:
        with pytest.raises(nats.errors.TimeoutError):  # dropped by the server: no ack comes
            await media.jetstream().publish(SUBJECT, b"{}", timeout=1)
        await media.flush()
        refusals = bus.refusals(media)
        assert (refusals.count, refusals.last) == (1, f'permissions violation for publish to "{SUBJECT}"')
    finally:
        await media.close()
    assert await payments_stored(deployed) == before + 1


async def refused(url: str, **options: object) -> BaseException:
    """What nats.connect raises, trying once."""
    with pytest.raises(Exception) as raised:  # the test asserts on what it was
        await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, **options)
    return raised.value


async def test_a_client_that_does_not_trust_the_ca_is_refused_by_certificate_verification(deployed: Deployed) -> None:
    error = await refused(
        deployed.url, user="payments", password=deployed.passwords["payments"], tls=ssl.create_default_context()
    )
    assert isinstance(error, ssl.SSLCertVerificationError), repr(error)
    assert "self-signed certificate in certificate chain" in str(error) or "unable to get local issuer" in str(error)


async def test_a_client_with_the_ca_but_no_login_or_a_wrong_one_is_refused(deployed: Deployed) -> None:
    context = tls_context(deployed.tls.ca, None, None)
    anonymous = await refused(deployed.url, tls=context)
    assert (type(anonymous), str(anonymous)) == (nats.errors.Error, "nats: 'Authorization Violation'")
    wrong = await refused(deployed.url, tls=context, user="ops", password=deployed.passwords["payments"])
    assert str(wrong) == "nats: 'Authorization Violation'"


def test_monitoring_answers_on_the_loopback_address_it_is_bound_to_only(deployed: Deployed, tmp_path: Path) -> None:
    assert httpx.get(f"http://127.0.0.1:{deployed.monitor_port}/healthz", timeout=5).json() == {"status": "ok"}
    # 127.0.0.2 is this machine too: a listener bound to 0.0.0.0 would answer there; one on 127.0.0.1 does not.
    with socket.socket() as probe:
        probe.settimeout(2)
        assert probe.connect_ex(("127.0.0.2", deployed.monitor_port)) != 0
    with socket.socket() as listener, socket.socket() as probe:  # and 127.0.0.2 itself is reachable
        listener.bind(("127.0.0.2", 0))
        listener.listen()
        assert probe.connect_ex(listener.getsockname()) == 0


def test_a_service_process_connects_over_tls_as_its_own_user_and_is_ready(
    deployed: Deployed, streams_made: subprocess.CompletedProcess[str], database_url: str, tmp_path: Path
) -> None:
    assert streams_made.returncode == 0
    port = free_port()
    with fresh_database(database_url) as admin:
        role_url = db_roles.service_urls(admin, tmp_path / db_roles.FILE)["identity"]
        asyncio.run(migrations.apply_all(admin))
        env = service_env(
            {"AUTH_MODE": "dev", "DATABASE_URL": role_url, "DATA_DIR": str(tmp_path), "IDENTITY_PORT": str(port)},
            **deployed.env("identity"),
        )
        identity = ServiceProcess("identity", port, env, echo=None).start()
        try:
            identity.wait_ready(90)
            ready = httpx.get(f"{identity.url}/readyz", timeout=5)
            assert (ready.status_code, ready.json()["status"]) == (200, "ready")
            # The server's own account of the connection: TLS, logged in as identity.
            connz = httpx.get(f"http://127.0.0.1:{deployed.monitor_port}/connz?auth=true", timeout=5).json()
            mine = [c for c in connz["connections"] if c.get("name") == "identity"]
            assert mine and {(c["authorized_user"], c["tls_version"]) for c in mine} == {("identity", "1.3")}, mine
        finally:
            identity.stop()


@contextlib.contextmanager
def cluster_node(
    directory: Path, index: int, route_ports: list[int], certificate: tuple[Path, Path, Path], tls: TlsFiles
) -> Iterator[int]:
    """Node `index` of a cluster from deploy/nats/nats-cluster.conf, its routes on 127.0.0.1 (the deploy
    config names nats-0.nats ...), with its own route `certificate`; yields its monitoring port."""
    ca, cert, key = certificate
    monitor = free_port()
    routes = {f"nats://nats-{i}.nats:6222": f"nats://127.0.0.1:{port}" for i, port in enumerate(route_ports)}
    config = deploy_files.local_copy(
        CLUSTER.read_text(),
        directory / f"n{index}",
        tls,
        client_port=free_port(),
        monitor_port=monitor,
        replace={
            "/etc/nats/tls/routes-ca.crt": str(ca),
            "/etc/nats/tls/routes.crt": str(cert),
            "/etc/nats/tls/routes.key": str(key),
            "listen: 0.0.0.0:6222": f"listen: 127.0.0.1:{route_ports[index]}",
            **routes,
        },
    )
    env = {"PATH": os.environ.get("PATH", "")} | deploy_files.statefulset_env(deploy_files.passwords())
    env |= {"NODE_NAME": f"nats-{index}", "CLUSTER_ADVERTISE": f"127.0.0.1:{route_ports[index]}"}
    process = start_nats(config, env, directory / f"n{index}.log")
    try:
        wait_until(lambda: port_open(monitor) or process.poll() is not None, timeout=15, what=f"node {index}")
        assert process.poll() is None, (directory / f"n{index}.log").read_text()
        yield monitor
    finally:
        stop(process)


def routed_to(monitor: int) -> set[str]:
    routes = httpx.get(f"http://127.0.0.1:{monitor}/routez", timeout=5).json()["routes"] or []
    return {route["remote_name"] for route in routes}


def test_only_a_node_holding_a_certificate_of_the_clusters_ca_may_route(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    ours = deploy_files.node_certificate(tmp_path / "cluster-ca", "creditstream cluster CA")
    theirs = deploy_files.node_certificate(tmp_path / "other-ca", "some other CA")
    # Each node trusts our cluster CA only; the intruder presents a node certificate another CA signed.
    intruder = (ours[0], theirs[1], theirs[2])
    ports = [free_port() for _ in range(3)]
    with (
        cluster_node(tmp_path, 0, ports, ours, tls) as first,
        cluster_node(tmp_path, 1, ports, ours, tls) as second,
        cluster_node(tmp_path, 2, ports, intruder, tls) as third,
    ):
        wait_until(lambda: routed_to(first) == {"nats-1"} and routed_to(second) == {"nats-0"}, timeout=20,
                   what="the two nodes of our CA routed")  # fmt: skip
        logs = [(tmp_path / f"n{i}.log") for i in range(3)]
        wait_until(lambda: "certificate signed by unknown authority" in logs[0].read_text(), timeout=20,
                   what="the intruder's route refused")  # fmt: skip
        assert (routed_to(first), routed_to(second), routed_to(third)) == ({"nats-1"}, {"nats-0"}, set())
