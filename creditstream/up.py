"""`creditstream up`: the whole system on this machine in one command. A service that dies is restarted
with backoff while the rest keeps running; Ctrl-C stops everything, services first.

Every child runs in a session of its own, so a terminal's Ctrl-C reaches this process only and it stops
them in order: services, localstripe, NATS, PostgreSQL. When the Ctrl-C reached them all at once,
nats-server died first and every service printed NATS reconnect tracebacks while it shut down (or, in
start-up, a failed-lifespan traceback), and localstripe a KeyboardInterrupt one (dropped unseen)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from creditstream import clerk_webhook
from creditstream.connect import nats_login, nats_users_file, stream_replicas
from creditstream.supervisor import Output, StopRequest, StopRequested, Supervisor, wait_or_stop
from shared import bus, db_roles, migrations
from shared.bus.credentials import Credentials
from shared.bus.users import OPS
from shared.service_tokens import dev_public_key_pem
from shared.settings import DEFAULT_PORTS, SERVICES, WORKER_PORTS, WORKERS
from shared.testing.localstripe_server import register_webhook
from shared.testing.nats import EmbeddedNats
from shared.testing.postgres import EmbeddedPostgres
from shared.testing.servers import ServiceProcess, service_env
from shared.testing.waiting import free_port, port_open
from shared.testing.waiting import stop as stop_process


@contextmanager
def _localstripe(port: int, state: Path, stop: StopRequest) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.testing.localstripe_server", "--port", str(port), "--state", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_or_stop(lambda: port_open(port), stop, timeout=20, what="localstripe")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


async def _create_streams(nats_url: str, ops: bus.Login) -> None:
    """As ops (no service may create them), before any service starts."""
    nc = await bus.connect(nats_url, "creditstream-up", ops)
    try:
        await bus.ensure_streams(nc.jetstream(), replicas=stream_replicas())
    finally:
        await nc.drain()


@dataclass(frozen=True)
class Infrastructure:
    overrides: dict[str, str]  # what every service is given
    nats_users: Credentials | None  # each process's own NATS login, when the server has users
    database_urls: dict[str, str]  # each process's own role

    def env(self, process: str) -> dict[str, str]:
        logins = self.nats_users.env(process) if self.nats_users else {}
        return service_env(self.overrides, **logins, DATABASE_URL=self.database_urls[process])


def _nats_users(nats: EmbeddedNats | None) -> Credentials | None:
    """The embedded server's users; for a NATS_URL, those of NATS_USERS_FILE if it names one."""
    if nats is not None:
        return nats.credentials
    path = nats_users_file()
    return Credentials.load_or_create(path) if os.environ.get("NATS_USERS_FILE") and path.exists() else None


def _infrastructure(stack: ExitStack, data_dir: Path, stop: StopRequest, out: Output) -> Infrastructure:
    """PostgreSQL, NATS and localstripe unless the environment names them; what the services are given."""
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        pg = EmbeddedPostgres(data_dir / "postgres")  # pg_ctl puts the server in a session of its own
        stack.callback(pg.stop)
        database_url = pg.url
    nats_url = os.environ.get("NATS_URL")
    nats = None
    if not nats_url:
        nats = EmbeddedNats(data_dir / "nats", port=int(os.environ.get("NATS_PORT", "4222")), new_session=True)
        stack.callback(nats.stop)
        nats_url = nats.start().url
    nats_users = _nats_users(nats)
    stop.checkpoint()
    database_urls = db_roles.service_urls(database_url, data_dir / db_roles.FILE)
    for schema, component, migration in asyncio.run(migrations.apply_all(database_url)):
        out.say(f"{schema}: applied {component} migration {migration.version} ({migration.name})")
    asyncio.run(_create_streams(nats_url, nats_users.login(OPS) if nats_users else nats_login()))
    overrides = {"DATABASE_URL": database_url, "NATS_URL": nats_url, "DATA_DIR": str(data_dir)}
    if not os.environ.get("STRIPE_API_BASE"):
        port = int(os.environ.get("LOCALSTRIPE_PORT", "8420") or free_port())
        api_base = stack.enter_context(_localstripe(port, data_dir / "localstripe.pickle", stop))
        secret = os.environ.get("STRIPE_WEBHOOK_SECRET") or "whsec_" + secrets.token_hex(16)
        overrides["STRIPE_API_BASE"] = api_base
        overrides["STRIPE_SECRET_KEY"] = os.environ.get("STRIPE_SECRET_KEY") or "sk_test_localstripe"
        overrides["STRIPE_WEBHOOK_SECRET"] = secret
        # So a payment confirmed at localstripe reaches payments, signed as Stripe signs.
        payments = f"http://127.0.0.1:{os.environ.get('PAYMENTS_PORT') or DEFAULT_PORTS['payments']}"
        register_webhook(api_base, f"{payments}/webhooks/stripe", secret)
    if os.environ.get("AUTH_MODE") == "dev" and not os.environ.get("CLERK_WEBHOOK_SECRET", "").strip():
        # Without one identity answers 503 on /webhooks/clerk; kept in DATA_DIR so a restart keeps it.
        overrides["CLERK_WEBHOOK_SECRET"] = clerk_webhook.dev_secret(data_dir)
    if os.environ.get("AUTH_MODE") == "dev" and not os.environ.get("SERVICE_JWT_PUBLIC_KEY", "").strip():
        # The services verify the CLI's tokens with the public half; the private one stays in DATA_DIR.
        overrides["SERVICE_JWT_PUBLIC_KEY"] = dev_public_key_pem(data_dir)
    return Infrastructure(overrides, nats_users, database_urls)


def _services(infrastructure: Infrastructure, out: Output) -> list[ServiceProcess]:
    env = infrastructure.env
    services = [
        ServiceProcess(name, int(os.environ.get(f"{name.upper()}_PORT") or DEFAULT_PORTS[name]), env(name), out.echo,
                       new_session=True)
        for name in SERVICES
    ]  # fmt: skip
    workers = [
        ServiceProcess(name, int(os.environ.get(_port_variable(name)) or WORKER_PORTS[name]), env(name), out.echo,
                       new_session=True, app=app)
        for name, app in WORKERS.items()
    ]  # fmt: skip
    return services + workers


def _port_variable(name: str) -> str:
    return f"{name.upper().replace('-', '_')}_PORT"  # MEDIA_WORKER_PORT


def run(console: Console) -> int:
    if os.environ.get("AUTH_MODE") not in ("dev", "clerk"):
        console.print("[red]Set AUTH_MODE (dev or clerk).[/] `make up` runs with AUTH_MODE=dev.")
        return 2
    data_dir = Path(os.environ.get("DATA_DIR", ".data")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    out = Output(console)
    with StopRequest().installed() as stop:
        code = _run(data_dir, stop, out)
        out.say("All stopped.", "bold")
    return code


def _run(data_dir: Path, stop: StopRequest, out: Output) -> int:
    with ExitStack() as stack:
        try:
            infrastructure = _infrastructure(stack, data_dir, stop, out)
            overrides = infrastructure.overrides
            supervisor = Supervisor(_services(infrastructure, out), out)
            stack.callback(supervisor.stop_all)
            supervisor.start_all(stop)
            _announce(out, supervisor.processes, overrides)
            supervisor.warn_unready()
            out.say("Ctrl-C stops everything.")
            supervisor.watch(stop)
        except StopRequested:
            pass
        except (RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
            # A child that got the terminal's Ctrl-C too (initdb, pg_ctl) fails its step: that is the stop.
            if not stop.requested:
                out.say(f"{exc}\nStopping everything.", "bold red")
                return 1
        finally:
            if stop.requested:
                out.say(f"\n{stop.signal} received: stopping everything…", "bold")
    return 0


def _announce(out: Output, processes: list[ServiceProcess], overrides: dict[str, str]) -> None:
    rows = [(p.name, str(p.pid), p.url) for p in processes]
    rows += [("postgres", "", overrides["DATABASE_URL"]), ("nats", "", overrides["NATS_URL"])]
    if stripe := overrides.get("STRIPE_API_BASE"):
        rows.append(("localstripe", "", stripe))
    table = Table("service", "pid", "URL", title="creditstream is up")
    table.columns[2].overflow = "fold"  # a URL is copied whole, not cut with an ellipsis
    for row in rows:
        table.add_row(*map(Text, row))  # Text: a URL is not markup
    out.console.print(table)
    out.say("Each service's API docs are at its URL + /docs.")
    out.say(_recipes({p.name: p.url for p in processes}, webhooks=os.environ.get("AUTH_MODE") == "dev"))


def _recipes(urls: dict[str, str], *, webhooks: bool) -> str:
    identity, projections = urls["identity"], urls["projections"]
    text = (
        "Dev token recipe:\n"
        f"  TOKEN=$(curl -s -X POST {identity}/dev/token -H 'content-type: application/json' \\\n"
        '      -d \'{"clerk_id":"user_demo","email":"demo@example.com"}\' | python3 -c \'import json,sys;'
        ' print(json.load(sys.stdin)["token"])\')\n'
        f'  curl -s -X POST {identity}/api/user/sync -H "Authorization: Bearer $TOKEN"\n'
        f'  curl -s {projections}/api/user/credits -H "Authorization: Bearer $TOKEN"\n'
    )
    if webhooks:
        text += (
            "A Clerk webhook, signed with CLERK_WEBHOOK_SECRET or else the dev secret in DATA_DIR/"
            f"{clerk_webhook.SECRET_FILE} (--type user.updated or user.deleted too):\n"
            f"  {_cli_command()} clerk-webhook --clerk-id user_demo --email demo@example.com --first-name Demo\n"
        )
    return text.rstrip("\n")


def _cli_command() -> str:
    """This CLI as the user can type it here, with the settings it needs from this run's environment."""
    script = Path(sys.executable).parent / "creditstream"
    path = os.path.relpath(script) if script.is_relative_to(Path.cwd()) else str(script)
    names = ("DATA_DIR", "HOST", "IDENTITY_PORT")
    settings = [f"{name}={shlex.quote(value)}" for name in names if (value := os.environ.get(name))]
    return " ".join([*settings, shlex.quote(path)])
