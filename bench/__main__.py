"""`make bench` (`python -m bench`): start a whole system in a temp dir, measure, print, save.

Budget (defaults, 2 cores): ~10 s start-up and sign-ins, 11 points of 2 + 10 s, ~50 s to write the
100,000-entry account, a few seconds of settling and shutting down: about 3.5 minutes in all.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench import report, system
from bench.run import Run, console


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each measured window")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per point")
    parser.add_argument("--accounts", type=int, default=200, help="accounts the debits spread over")
    parser.add_argument("--entries", type=int, default=100_000, help="history of the long account (0: skip)")
    return parser.parse_args()


def main() -> None:
    args = parse()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="creditstream-bench-") as tmp:
        console.log("starting PostgreSQL, NATS, the five services and the naive baseline ...")
        with system.running(Path(tmp)) as sut:
            results = asyncio.run(Run(sut, args, began).everything())
    results["total_seconds"] = round(time.monotonic() - began, 1)
    path = report.write(results)
    report.show(results)
    print(f"whole run {results['total_seconds']:.0f} s; figures written to {path}")


if __name__ == "__main__":
    main()
