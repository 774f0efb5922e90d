"""`creditstream top`: a live view of every process's /metrics (no Prometheus needed): requests, 5xx and ledger
commands per second, readiness, consumers' pending and dead letters, relays' backlog, read models' lag."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from creditstream.connect import service_urls
from shared.settings import WORKER_PORTS


@dataclass
class Scrape:
    """One process's samples: name → [(labels, value)]; `error` when it did not answer."""

    at: float
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=lambda: defaultdict(list))
    error: str = ""

    def total(self, name: str, **labels: str) -> float:
        return sum(v for found, v in self.samples.get(name, []) if labels.items() <= found.items())

    def by(self, name: str, label: str) -> dict[str, float]:
        return {found[label]: v for found, v in self.samples.get(name, []) if label in found}


def targets() -> dict[str, str]:
    urls = service_urls()
    host = os.environ.get("HOST") or "127.0.0.1"
    for name, port in WORKER_PORTS.items():
        variable = name.upper().replace("-", "_") + "_PORT"  # MEDIA_WORKER_PORT
        urls[name] = f"http://{host}:{os.environ.get(variable) or port}"
    return urls


def scrape(url: str) -> Scrape:
    taken = Scrape(time.monotonic())
    try:
        response = httpx.get(f"{url}/metrics", timeout=5)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        taken.error = type(exc).__name__
        return taken
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            taken.samples[sample.name].append((dict(sample.labels), sample.value))
    return taken


def _rate(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    seconds = after.at - before.at
    return max(0.0, after.total(name, **labels) - before.total(name, **labels)) / seconds if seconds > 0 else 0.0


def view(before: dict[str, Scrape], after: dict[str, Scrape]) -> Group:
    requests = "http_server_request_duration_seconds_count"
    processes = Table(title="processes", expand=True)
    for column in ("process", "ready", "req/s", "5xx/s", "ledger commands/s", "429/s", "NATS refused"):
        processes.add_column(column, justify="left" if column in ("process", "ready") else "right")
    queues = Table(title="consumers, relays, read models", expand=True)
    for column in ("process", "what", "pending / backlog / lag", "dead letters"):
        queues.add_column(column, justify="left" if column in ("process", "what") else "right")
    for name, now in after.items():
        if now.error:
            processes.add_row(name, f"[red]no answer ({now.error})[/]", "", "", "", "", "")
            continue
        then = before[name]
        ready = "[green]ready[/]" if now.total("creditstream_ready") == 1 else "[red]not ready[/]"
        server_errors = sum(
            _rate(then, now, requests, http_response_status_code=code)
            for code in {labels.get("http_response_status_code", "") for labels, _ in now.samples.get(requests, [])}
            if code.startswith("5")
        )
        refused = now.total("creditstream_nats_permission_denied_total")
        processes.add_row(
            name, ready, f"{_rate(then, now, requests):.1f}", f"{server_errors:.1f}",
            f"{_rate(then, now, 'creditstream_ledger_commands_total'):.1f}",
            f"{_rate(then, now, 'creditstream_rate_limited_total'):.1f}",
            f"[red]{refused:.0f}[/]" if refused else "0",
        )  # fmt: skip
        parked = now.by("creditstream_deadletters", "consumer")
        for consumer, pending in sorted(now.by("creditstream_consumer_pending_messages", "consumer").items()):
            letters = parked.get(consumer, 0)
            shown = f"[red]{letters:.0f}[/]" if letters else "0"
            queues.add_row(name, f"consumer {consumer}", f"{pending:.0f}", shown)
        for relay, backlog in sorted(now.by("creditstream_relay_backlog_events", "relay").items()):
            queues.add_row(name, f"relay {relay}", f"{backlog:.0f}", "")
        for model, lag in sorted(now.by("creditstream_projection_lag_seconds", "model").items()):
            queues.add_row(name, f"read model {model}", f"{lag:.2f} s", "")
    return Group(processes, queues)


def run(console: Console, interval: float, once: bool) -> int:
    urls = targets()
    before = {name: scrape(url) for name, url in urls.items()}
    time.sleep(interval)  # rates need two scrapes
    after = {name: scrape(url) for name, url in urls.items()}
    if once:
        console.print(view(before, after))
        return 0 if not any(s.error for s in after.values()) else 1
    with Live(view(before, after), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)
                before, after = after, {name: scrape(url) for name, url in urls.items()}
                live.update(view(before, after))
        except KeyboardInterrupt:
            return 0
