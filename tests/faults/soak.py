"""`make soak`: the whole mix at half of its peak rate for SOAK_MINUTES (10 by default) against
`creditstream up` on a PostgreSQL and NATS of its own. It measures the peak first (the mix as fast as answers
come, PEAK_SECONDS), then paces the load at half of it, sampling the projection lag (a probe debit until
projections show it) and each process's RSS as it goes. At the end the load settles and drains and the
same verdict as the fault cases runs (the audit included). Prints the figures; exit 1 if a check failed.
Not part of `make test`: it is long by design."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from shared.testing.nats import EmbeddedNats
from shared.testing.postgres import EmbeddedPostgres
from tests.e2e.auth_support import admin_token
from tests.faults.mix import Mix
from tests.faults.probe import Probe
from tests.faults.up_system import PROCESSES, UpSystem, creditstream_up
from tests.faults.verdict import Row, judge, table

PEAK_SECONDS = 30.0
SAMPLE_EVERY = 10.0
CLIENTS = int(os.environ.get("FAULT_CLIENTS") or 8)


def rss_mb(system: UpSystem) -> dict[str, float]:
    """Resident memory of each process under `creditstream up`, in MB."""
    found = {}
    for name in PROCESSES:
        status = Path(f"/proc/{system.pid(name)}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        found[name] = kb / 1024
    return found


@dataclass
class Figures:
    peak: float  # commands/s, as fast as answers came
    rate: float  # commands/s while soaking
    lags: list[float]
    rss_start: dict[str, float]
    rss_middle: dict[str, float]  # half-way: growth that stops after warming up is not a leak; steady growth is
    rss_end: dict[str, float]


async def soak(system: UpSystem, minutes: float) -> tuple[Mix, Figures]:
    probe = Probe(system)
    mix = Mix(system, CLIENTS)
    await mix.start()
    try:
        await asyncio.sleep(5)  # warm-up: connections, caches, the first users
        counted, started = len(mix.sent), time.monotonic()
        await asyncio.sleep(PEAK_SECONDS)
        peak = (len(mix.sent) - counted) / (time.monotonic() - started)
        mix.rate = peak / 2
        rss_start = rss_mb(system)
        lags: list[float] = []
        counted, started = len(mix.sent), time.monotonic()
        deadline = started + minutes * 60
        rss_middle: dict[str, float] = {}
        while time.monotonic() < deadline:
            lags.append(await asyncio.to_thread(probe.lag))
            if not rss_middle and time.monotonic() >= started + minutes * 30:
                rss_middle = rss_mb(system)
            await asyncio.sleep(max(0.0, min(SAMPLE_EVERY, deadline - time.monotonic())))
        rate = (len(mix.sent) - counted) / (time.monotonic() - started)
        rss_end = rss_mb(system)
    finally:
        await mix.stop()
    await mix.finish()
    return mix, Figures(peak, rate, lags, rss_start, rss_middle or rss_end, rss_end)


def report(figures: Figures, row: Row) -> str:
    lags, rss_start, rss_end = sorted(figures.lags), figures.rss_start, figures.rss_end
    lines = [
        f"peak {figures.peak:.0f} commands/s; soaked at {figures.rate:.0f}/s",
        f"projection lag over {len(lags)} samples: p50 {statistics.median(lags) * 1000:.0f} ms,"
        f" p99 {lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms",
        "",
        "| process | RSS start MB | half-way MB | end MB | start to end | half-way to end |",
        "|---|---|---|---|---|---|",
    ]
    middle = figures.rss_middle
    lines += [f"| {name} | {rss_start[name]:.1f} | {middle[name]:.1f} | {rss_end[name]:.1f}"
              f" | {rss_end[name] - rss_start[name]:+.1f} | {rss_end[name] - middle[name]:+.1f} |"
              for name in PROCESSES]  # fmt: skip
    lines += ["", f"drained in {row.drained:.1f} s, of which payments' reconcile {row.reconciled:.1f} s"]
    return "\n".join([*lines, "", table([row])])


def main() -> int:
    minutes = float(os.environ.get("SOAK_MINUTES") or 10)
    workdir = Path(tempfile.mkdtemp(prefix="creditstream-soak-"))
    postgres = EmbeddedPostgres(workdir / "pg")
    nats = EmbeddedNats(workdir / "nats").start()
    try:
        with creditstream_up(workdir, postgres.url, nats.url, nats.credentials_file) as system:
            print(f"soaking for {minutes:g} minutes (peak first, {PEAK_SECONDS:g} s) …", flush=True)
            mix, figures = asyncio.run(soak(system, minutes))
            row = judge(system, mix, Row(f"soak {minutes:g} min"), admin_token(system))
            print(report(figures, row))
            for problem in row.problems[:20]:
                print("PROBLEM:", problem)
            return 1 if row.problems or row.lost or row.duplicated or row.leaked else 0
    finally:
        nats.stop()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
