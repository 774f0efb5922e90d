"""`creditstream streams`: each stream's size, each durable consumer's progress and dead letters, and
each service's readiness and alarms (a stuck relay or a parked message shows there with its reason)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

import httpx
from rich.console import Console
from rich.table import Table

from creditstream.connect import connect_nats, service_token, service_urls, stream_replicas
from shared import bus
from shared.bus import deadletters
from shared.scopes import Scope


@dataclass(frozen=True)
class Snapshot:
    streams: list[tuple[str, int, int, int]]
    consumers: list[tuple[str, str, int, int, int]]
    parked: Counter[str]


async def _collect() -> Snapshot:
    nc = await connect_nats("creditstream-cli")
    try:
        js = nc.jetstream()
        streams, consumers = [], []
        for name in bus.STREAMS:
            info = await js.stream_info(name)
            streams.append((name, info.state.messages, info.state.first_seq, info.state.last_seq))
            for c in await js.consumers_info(name):
                delivered = c.delivered.stream_seq if c.delivered else 0
                consumers.append((name, c.name, delivered, c.num_pending or 0, c.num_ack_pending or 0))
        return Snapshot(streams, consumers, await deadletters.counts(js))
    finally:
        await nc.drain()


def readiness() -> dict[str, tuple[str, list[str]]]:
    """Each service's /readyz ("ready", or why not) and its alarms (GET /alarms, with a service token)."""
    states: dict[str, tuple[str, list[str]]] = {}
    for name, url in service_urls().items():
        try:
            response = httpx.get(f"{url}/readyz", timeout=5)
            ready = "ready" if response.status_code == 200 else response.json().get("detail", "not ready")
        except httpx.HTTPError as exc:
            states[name] = (f"unreachable ({type(exc).__name__})", [])
            continue
        states[name] = (ready, _alarms(name, url))
    return states


def _alarms(name: str, url: str) -> list[str]:
    token = service_token("creditstream-cli", audience=name, scopes=[Scope(f"{name}:alarms")])
    if token is None:
        return ["alarms not read: no service key (SERVICE_JWT_PRIVATE_KEY)"]
    try:
        response = httpx.get(f"{url}/alarms", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    except httpx.HTTPError as exc:
        return [f"alarms not read ({type(exc).__name__})"]
    if response.status_code != 200:
        return [f"alarms not read (HTTP {response.status_code})"]
    return list(response.json()["alarms"])


def show(console: Console) -> int:
    snapshot = asyncio.run(_collect())
    table = Table(title="streams")
    for column in ("stream", "messages", "first seq", "last seq"):
        table.add_column(column)
    for row in snapshot.streams:
        table.add_row(*map(str, row))
    console.print(table)
    table = Table(title="consumers")
    for column in ("stream", "consumer", "delivered seq", "pending", "awaiting ack", "dead letters"):
        table.add_column(column)
    for stream, name, *progress in snapshot.consumers:
        parked = snapshot.parked[name]
        table.add_row(stream, name, *map(str, progress), f"[red]{parked}[/]" if parked else "0")
    console.print(table)
    table = Table(title="services")
    table.add_column("service")
    table.add_column("readiness", overflow="fold")
    table.add_column("alarms", overflow="fold")
    states = readiness()
    for name, (ready, alarms) in states.items():
        shown = "[green]ready[/]" if ready == "ready" else f"[red]{ready}[/]"
        table.add_row(name, shown, "\n".join(f"[red]{a}[/]" for a in alarms) or "[green]none[/]")
    console.print(table)
    if snapshot.parked:
        console.print("Dead letters wait: `creditstream deadletters` lists them; fix the cause, then `... redrive`.")
    clear = all(ready == "ready" and not alarms for ready, alarms in states.values())
    return 0 if clear and not snapshot.parked else 1


async def _ensure() -> list[str]:
    nc = await connect_nats("creditstream-streams")
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js, replicas=stream_replicas())
        return [f"{name} ({(await js.stream_info(name)).config.num_replicas} replicas)" for name in bus.STREAMS]
    finally:
        await nc.drain()


def ensure(console: Console) -> int:
    """`creditstream streams ensure`: as ops, what every service waits for at start."""
    console.print("streams ready: " + ", ".join(asyncio.run(_ensure())))
    return 0
