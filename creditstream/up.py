"""`creditstream up`: the whole system on this machine, one command, clean Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from shared import bus, db
from shared.settings import DEFAULT_PORTS, SERVICES
from shared.testing.servers import (
    EmbeddedNats,
    EmbeddedPostgres,
    ServiceProcess,
    free_port,
    port_open,
    service_env,
    wait_until,
)

COLOURS = {"projections": "cyan", "identity": "magenta", "ledger": "green", "payments": "yellow", "media": "blue"}


class Shutdown(Exception):
    pass


def _raise_shutdown(signum: int, _frame: object) -> None:
    raise Shutdown(signal.Signals(signum).name)


@contextmanager
def _localstripe(port: int, console: Console) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.testing.localstripe_server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: port_open(port), timeout=20, what="localstripe")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


async def _prepare(database_url: str, nats_url: str) -> None:
    """Each service's schema and the streams, before any service starts."""
    for service in SERVICES:
        await db.migrate(database_url, service, ())
    nc = await bus.connect(nats_url, name="creditstream-up")
    try:
        await bus.ensure_streams(nc.jetstream())
    finally:
        await nc.drain()


def run(console: Console) -> int:
    if os.environ.get("AUTH_MODE") not in ("dev", "clerk"):
        console.print("[red]Set AUTH_MODE (dev or clerk).[/] `make up` runs with AUTH_MODE=dev.")
        return 2
    data_dir = Path(os.environ.get("DATA_DIR", ".data")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    previous = {sig: signal.signal(sig, _raise_shutdown) for sig in (signal.SIGINT, signal.SIGTERM)}
    lock = threading.Lock()

    def echo(name: str, line: str) -> None:
        with lock:
            console.print(f"[{COLOURS.get(name, 'white')}]{name:>11} |[/] {line}", markup=True, highlight=False)

    with ExitStack() as stack:
        try:
            database_url = os.environ.get("DATABASE_URL")
            if not database_url:
                pg = EmbeddedPostgres(data_dir / "postgres")
                stack.callback(pg.stop)
                database_url = pg.url
            nats_url = os.environ.get("NATS_URL")
            if not nats_url:
                nats = EmbeddedNats(data_dir / "nats", port=int(os.environ.get("NATS_PORT", "4222"))).start()
                stack.callback(nats.stop)
                nats_url = nats.url
            asyncio.run(_prepare(database_url, nats_url))
            overrides = {"DATABASE_URL": database_url, "NATS_URL": nats_url, "DATA_DIR": str(data_dir)}
            if not os.environ.get("STRIPE_API_BASE"):
                port = int(os.environ.get("LOCALSTRIPE_PORT", "8420") or free_port())
                overrides["STRIPE_API_BASE"] = stack.enter_context(_localstripe(port, console))
                overrides.setdefault("STRIPE_SECRET_KEY", os.environ.get("STRIPE_SECRET_KEY", "sk_test_localstripe"))
                overrides.setdefault(
                    "STRIPE_WEBHOOK_SECRET", os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_" + secrets.token_hex(16))
                )
            env = service_env(overrides)
            processes = [
                ServiceProcess(name, int(env.get(f"{name.upper()}_PORT", DEFAULT_PORTS[name])), env, echo)
                for name in SERVICES
            ]
            for process in processes:
                process.start()
                stack.callback(process.stop)
            for process in processes:
                process.wait_ready(timeout=120)
            _announce(console, processes, database_url, nats_url, overrides.get("STRIPE_API_BASE"))
            while True:
                for process in processes:
                    if process.process and process.process.poll() is not None:
                        console.print(f"[red]{process.name} exited with {process.process.returncode}; stopping.[/]")
                        return 1
                threading.Event().wait(0.5)
        except Shutdown as stop:
            console.print(f"\n[bold]{stop} received: stopping everything…[/]")
            return 0
        finally:
            # Ignore further Ctrl-C while children and servers are stopped, so none is left behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stack.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            console.print("[bold]All stopped.[/]")
    return 0


def _announce(
    console: Console, processes: list[ServiceProcess], db_url: str, nats_url: str, stripe: str | None
) -> None:
    table = Table(title="creditstream is up")
    table.add_column("service")
    table.add_column("URL")
    for process in processes:
        table.add_row(process.name, f"{process.url}  (docs: {process.url}/docs)")
    table.add_row("postgres", db_url)
    table.add_row("nats", nats_url)
    if stripe:
        table.add_row("localstripe", stripe)
    console.print(table)
    identity = next(p.url for p in processes if p.name == "identity")
    projections = next(p.url for p in processes if p.name == "projections")
    console.print(
        "Dev token recipe:\n"
        f"  TOKEN=$(curl -s -X POST {identity}/dev/token -H 'content-type: application/json' \\\n"
        '      -d \'{"clerk_id":"user_demo","email":"demo@example.com"}\' | python3 -c \'import json,sys;'
        ' print(json.load(sys.stdin)["token"])\')\n'
        f'  curl -s -X POST {identity}/api/user/sync -H "Authorization: Bearer $TOKEN"\n'
        f'  curl -s {projections}/api/user/credits -H "Authorization: Bearer $TOKEN"\n'
        "Ctrl-C stops everything.",
        highlight=False,
    )
