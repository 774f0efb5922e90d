"""`creditstream replay projections`: have projections rebuild its read models from sequence 1 beside the live
ones and swap them in (services/projections/replay.py says how), with a progress bar until it is done."""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from creditstream.connect import service_token, service_urls
from shared.scopes import Scope

READ_MODELS = ("projections",)  # its consumers share their tables: one unit to rebuild
POLL_SECONDS = 0.25


def replay(console: Console, read_model: str, timeout: float) -> int:
    if read_model not in READ_MODELS:
        console.print(f"[red]No read model {read_model!r}:[/] there is {', '.join(READ_MODELS)}.", highlight=False)
        return 2
    token = service_token(
        "creditstream-cli", audience="projections", scopes=[Scope.PROJECTIONS_REPLAY, Scope.PROJECTIONS_STATUS]
    )
    if token is None:
        console.print("[red]No service key:[/] set SERVICE_JWT_PRIVATE_KEY, or DATA_DIR to where `up` keeps its key.")
        return 2
    with httpx.Client(base_url=service_urls()["projections"], headers={"Authorization": f"Bearer {token}"},
                      timeout=30) as client:  # fmt: skip
        started = client.post("/api/projections/replay")
        if started.status_code not in (202, 409):
            console.print(f"[red]{started.status_code}[/] {started.text}", highlight=False)
            return 1
        if started.status_code == 409:
            console.print("A replay is running already: following it.")
        status = _follow(console, client, timeout)
    if status["state"] != "done":
        console.print(f"[red]Replay {status['state']}:[/] {status.get('error') or 'it did not finish in time'}",
                      highlight=False)  # fmt: skip
        return 1
    console.print(
        f"[green]Rebuilt and swapped in:[/] {status['applied']:,} events in {status['seconds']:.2f} s"
        f" (streams read to {', '.join(f'{s} {n}' for s, n in status['streams'].items())}).",
        highlight=False,
    )
    return 0


def _follow(console: Console, client: httpx.Client, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("rebuilding", total=None)
        while True:
            status: dict[str, Any] = client.get("/api/projections/replay").json()
            progress.update(task, description=status["state"], completed=status["applied"],
                            total=status["total"] or None)  # fmt: skip
            if status["state"] in ("done", "failed", "idle") or time.monotonic() > deadline:
                return status
            time.sleep(POLL_SECONDS)
