"""The run's figures as tables on the terminal and as JSON on disk (`bench/results/latest.json`).

Everything printed is read from the results dict that is written, so the JSON holds every figure of
the table. `python -m bench.report [file]` prints a saved run again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results" / "latest.json"
LEGEND = {
    "naive FastAPI service": "bench/naive.py, 1 uvicorn worker: per debit the services' own RS256 check"
    " (shared.auth.TokenVerifier against identity's dev JWKS), then UPDATE credits ... AND balance >= $1"
    " and INSERT a log row in one transaction",
    "pgbench": "the same UPDATE and INSERT in one transaction from the wheel's pgbench (-M prepared, 2 threads):"
    " no HTTP, no token, no Python",
    "ledger over HTTP": "POST /api/accounts/{id}/debits with the user's token and an Idempotency-Key each",
    "ledger over NATS": "ledger.rpc.debit request/reply, one shared connection; no token (NATS permissions guard"
    " the subject), so no RS256 check",
    "client µs/req": "the load generator's own CPU per request (its fixed costs weigh more at low rates)",
    "CPU by process": "cores used in the window; others: whatever else ran on the machine meanwhile",
}
SHORT = {"projections": "proj", "postgres": "pg", "nats-server": "nats", "identity": "ident"}


def write(results: dict[str, Any], path: Path = RESULTS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**results, "notes": LEGEND}, indent=2) + "\n")
    return path


def show(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=160)
    console.print(_points(results))
    console.print(_legend())
    console.print(_ratios(results))
    console.print(_others(results))


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cpu(shares: dict[str, float]) -> str:
    """The biggest CPU users of the window, in cores: who the target's time really went to."""
    top = sorted(((v, k) for k, v in shares.items() if k != "machine"), reverse=True)[:3]
    return " ".join(f"{SHORT.get(k, k)} {v:.2f}" for v, k in top if v >= 0.05)


def _points(results: dict[str, Any]) -> Table:
    m = results["machine"]
    s = results["settings"]
    table = Table(
        title=f"creditstream bench: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB,"
        f" {m['postgres'].split(' on ')[0]}, {m['nats_server']}, Python {m['python']}",
        caption=f"each point: {s['warmup_s']} s warm-up, then {s['duration_s']} s measured over {s['accounts']}"
        " accounts; latencies from the client; CPU in cores (of "
        f"{m['cores']}), machine = all processes",
    )
    for name in ("target", "clients", "ops/s", "p50 ms", "p95 ms", "p99 ms", "errors", "client µs/req"):
        table.add_column(name, justify="left" if name == "target" else "right")
    table.add_column("machine", justify="right")
    table.add_column("CPU by process (cores)")
    for p in [results["client_ceiling"], *results["points"]]:
        errors = {k: v for k, v in p["answers"].items() if k not in ("201", "200", "ok")}
        table.add_row(
            p["target"],
            str(p["clients"]),
            _fmt(p["per_second"], 0),
            _fmt(p["p50_ms"], 2),
            _fmt(p["p95_ms"], 2),
            _fmt(p["p99_ms"], 2),
            ", ".join(f"{v} {k}" for k, v in errors.items() if v) or "0",
            _fmt(p["client_cpu_us_per_request"], 0),
            _fmt(p["cpu_cores_by_process"].get("machine"), 2),
            _cpu(p["cpu_cores_by_process"]),
            end_section=p["clients"] == max(q["clients"] for q in results["points"]),
        )
    return table


def _legend() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for term, meaning in LEGEND.items():
        grid.add_row(term, meaning)
    return grid


def _ratios(results: dict[str, Any]) -> Table:
    table = Table(title="ratios at 32 clients (debits/s of the ledger ÷ debits/s of the baseline)")
    table.add_column("ledger path")
    table.add_column("÷ naive FastAPI service", justify="right")
    table.add_column("÷ pgbench (naive SQL)", justify="right")
    for path, ratios in results["ratios"].items():
        table.add_row(path, f"{ratios['naive_service']:.2f}x", f"{ratios['pgbench']:.3f}x")
    return table


def _others(results: dict[str, Any]) -> Table:
    table = Table(title="projection lag, a long account, memory", show_header=False)
    table.add_column("what")
    table.add_column("figure")
    for when, lag in results["projection_lag"].items():
        table.add_row(
            f"projection lag, {when}",
            f"p50 {_fmt(lag['p50_ms'], 0)} ms, p99 {_fmt(lag['p99_ms'], 0)} ms, max {_fmt(lag['max_ms'], 0)} ms"
            f" ({lag['samples']} probes, {lag['unseen']} never seen)",
        )
    if long := results.get("long_account"):
        table.add_row(
            f"account with {long['entries']:,} entries",
            f"load {long['load_ms']} ms, one debit {long['debit_ms']} ms"
            f" (fresh account: load {long['fresh_load_ms']} ms, debit {long['fresh_debit_ms']} ms;"
            f" history written in {long['build_seconds']} s)",
        )
    for name, memory in results["memory"].items():
        table.add_row(f"memory of {name}", f"RSS {memory['rss_mb']} MB (peak {memory['peak_mb']} MB)")
    table.add_row("whole run", f"{results['total_seconds']:.0f} s")
    return table


if __name__ == "__main__":
    show(json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else RESULTS).read_text()))
