"""What the figures were measured on: they mean little alone, so every run names its machine."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from psycopg import AsyncConnection


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return 0.0


def nats_server_version() -> str:
    # The venv's binary, the one EmbeddedNats starts.
    binary = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or "nats-server"
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    return done.stdout.strip()


async def postgres_version(database_url: str) -> str:
    async with await AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute("SELECT version()")).fetchone()
    return str(row[0]) if row else "unknown"


async def describe(database_url: str) -> dict[str, object]:
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gib": memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": await postgres_version(database_url),
        "nats_server": nats_server_version(),
    }
