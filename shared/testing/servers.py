"""The five services (and the media worker) as uvicorn processes, each with its own logins, on the
PostgreSQL and nats-server of shared/testing/postgres.py and nats.py. Used by `creditstream up` and by the
test fixtures alike, so the suite runs exactly what a newcomer runs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx

from shared import db_roles, migrations
from shared.service_tokens import dev_public_key_pem
from shared.settings import SERVICES, WORKERS
from shared.testing.localstripe_server import LocalStripe, register_webhook
from shared.testing.nats import EmbeddedNats
from shared.testing.waiting import free_port, stop, wait_until


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
        Unlike /readyz it is 200 before the database and NATS answer."""
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

    def restart(self, **env: str) -> ServiceProcess:
        """Stop it if it still runs, then start it again: same port and log, its environment changed by `env`
        (a setting to move, such as CLOCK_OFFSET_SECONDS)."""
        self._env.update(env)
        self.stop()
        self.join_output()
        return self.start()

    def join_output(self, timeout: float = 5) -> None:
        """Wait until the log of a process that has exited is echoed to its end, so its last lines come
        before what its owner prints next (and no daemon thread writes to stdout at interpreter exit)."""
        if self._pump_thread is not None:
            self._pump_thread.join(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        return None if self.process is None else stop(self.process, sig, timeout)


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
        # Only the public half: the tests sign service tokens with the key file it leaves in data_dir.
        "SERVICE_JWT_PUBLIC_KEY": dev_public_key_pem(data_dir),
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
    asyncio.run(migrations.apply_all(database_url))  # as `creditstream up` does before the services start

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
