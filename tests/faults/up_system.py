"""The system the load-driven fault cases break: `creditstream up` itself, as a newcomer runs it, in a
subprocess, on a PostgreSQL, NATS and localstripe the test owns (so a case can crash those too), every
port free. The supervisor inside `creditstream up` is what restarts a service a case kills."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from shared import db_roles
from shared.bus.credentials import Credentials
from shared.settings import SERVICES, WORKERS
from shared.testing.localstripe_server import LocalStripe, register_webhook
from shared.testing.servers import ServiceProcess, service_env
from shared.testing.waiting import free_port, wait_until
from tests.conftest import System

PROCESSES = (*SERVICES, *WORKERS)
# A worker killed mid-job has its job redelivered after this, not after the 30 s default.
ACK_WAIT_SECONDS = 5


class UpSystem(System):
    """`System` (what the e2e helpers take) whose services run under `creditstream up`; `copies` names
    further instances of a service the load spreads its commands over (see `Mix.url`)."""

    def __init__(self, env: dict[str, str], services: dict[str, ServiceProcess], up: subprocess.Popen[bytes],
                 log: Path, nats_users: Credentials) -> None:  # fmt: skip
        super().__init__(env, services, nats_users)
        self.up = up
        self.log = log
        self.copies: dict[str, list[str]] = {}

    def pid(self, name: str) -> int:
        """The pid of the uvicorn serving `name` now: the one with its port on its command line."""
        wanted = ["--port", str(self.services[name].port)]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().decode().split("\0")
            except OSError:  # it exited while we looked
                continue
            if "uvicorn" in argv and any(argv[i : i + 2] == wanted for i in range(len(argv) - 1)):
                return int(entry.name)
        raise LookupError(f"no process serves {name} on port {self.services[name].port}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        pid = self.pid(name)
        os.kill(pid, sig)
        return pid

    def restarted(self, name: str, killed: int) -> None:
        """Wait until `creditstream up` has a new process serving `name` in place of `killed`."""

        def back() -> bool:
            try:
                return self.pid(name) != killed and self.answering(name)
            except LookupError:
                return False

        wait_until(back, timeout=120, interval=0.1, what=f"{name} restarted by creditstream up")

    def answering(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.url(name)}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def creditstream_up(
    workdir: Path, database_url: str, nats_url: str, nats_users_file: Path, **settings: str
) -> Iterator[UpSystem]:
    """`creditstream up` on the given PostgreSQL and NATS (whose users' passwords `nats_users_file` holds:
    `up` hands each process its own, as it does with its embedded server)."""
    stripe = LocalStripe().start()
    ports = {name: free_port() for name in PROCESSES}
    base = {
        "AUTH_MODE": "dev",
        "DATA_DIR": str(workdir / "data"),
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "NATS_USERS_FILE": str(nats_users_file),
        "STRIPE_API_BASE": stripe.api_base,
        "STRIPE_SECRET_KEY": "sk_test_creditstream",
        "STRIPE_WEBHOOK_SECRET": "whsec_creditstream_test_stripe_webhooks",
        "CLERK_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"creditstream-test-clerk-webhooks").decode(),
        "ACK_WAIT_SECONDS": str(ACK_WAIT_SECONDS),
        **{f"{name.upper().replace('-', '_')}_PORT": str(port) for name, port in ports.items()},
        **settings,
    }
    env = service_env(base)
    services = {name: ServiceProcess(name, port, env, echo=None) for name, port in ports.items()}
    log = workdir / "creditstream-up.log"
    register_webhook(stripe.api_base, f"{services['payments'].url}/webhooks/stripe", base["STRIPE_WEBHOOK_SECRET"])
    with log.open("wb") as out:
        up = subprocess.Popen([str(Path(sys.executable).parent / "creditstream"), "up"], env=env, stdout=out,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    system = UpSystem(env, services, up, log, Credentials.load_or_create(nats_users_file))
    try:
        wait_until(lambda: up.poll() is not None or all(map(system.answering, PROCESSES)), timeout=120,
                   what="every process under creditstream up")  # fmt: skip
        if up.poll() is not None:
            raise RuntimeError("creditstream up exited:\n" + system.tail())
        yield system
    finally:
        up.send_signal(signal.SIGINT)  # Ctrl-C: it stops its services in order
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        stripe.stop()


@contextlib.contextmanager
def copies(system: UpSystem, *names: str) -> Iterator[dict[str, ServiceProcess]]:
    """A second instance of each named service beside `creditstream up`'s, on the same database and bus;
    the load then spreads its commands over both."""
    made = {}
    roles = db_roles.service_urls(system.env["DATABASE_URL"], Path(system.env["DATA_DIR"]) / db_roles.FILE)
    for name in names:
        app = WORKERS.get(name) or f"services.{name}.main:create_app"
        env = system.env | system.nats_users.env(name) | {"DATABASE_URL": roles[name]}  # its own logins
        made[name] = ServiceProcess(f"{name}-copy", free_port(), env, echo=None, app=app)
    try:
        for process in made.values():
            process.start()
        for process in made.values():
            process.wait_ready(90)
        for name, process in made.items():
            system.copies[name] = [system.url(name), process.url]
        yield made
    finally:
        system.copies.clear()
        for process in made.values():
            process.stop()
