"""Where the CPU goes, read from /proc: per process over a window, the whole machine, and memory.

On 2 cores every figure is shared between the servers, PostgreSQL, NATS and the load generator;
knowing each one's share tells a reader where a target spends its time without a profiler.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int, *, with_children: bool = False) -> float:
    """CPU seconds of a process (all its threads); with the children it has already reaped."""
    # Fields after the command name, which may hold spaces: split after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + (cutime + cstime if with_children else 0)) / TICK


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # it exited while we looked
            if parent == pid:
                found.append(int(entry.name))
    return found


def tree_cpu(pid: int) -> float:
    """A forking server (the postmaster): itself, its live children, and the exited ones it reaped."""
    total = process_cpu(pid, with_children=True)
    for child in children_of(pid):
        with contextlib.suppress(OSError):  # it exited between the listing and the read
            total += process_cpu(child)
    return total


@dataclass(frozen=True)
class Watched:
    """The processes whose CPU a window accounts for: name → (pid, count its children too)."""

    processes: Mapping[str, tuple[int, bool]]

    def snapshot(self) -> dict[str, float]:
        taken = {name: tree_cpu(pid) if tree else process_cpu(pid) for name, (pid, tree) in self.processes.items()}
        taken["machine"] = machine_busy()
        taken["clock"] = time.monotonic()
        return taken

    @staticmethod
    def cores_used(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
        """Each process's CPU over the window, in cores (1.0: one core busy all along)."""
        elapsed = after["clock"] - before["clock"]
        return {name: (after[name] - before[name]) / elapsed for name in before if name != "clock"}


def shares(before: Mapping[str, float], after: Mapping[str, float], client_seconds: float) -> dict[str, float]:
    """Cores used over a window by each of our processes, the load generator (`client`), the whole
    machine, and `others`: whatever else ran on the machine meanwhile (a shared machine's noise)."""
    used = Watched.cores_used(before, after)
    used["client"] = client_seconds / (after["clock"] - before["clock"])
    used["others"] = max(0.0, used["machine"] - sum(v for k, v in used.items() if k != "machine"))
    return used


def machine_busy() -> float:
    """CPU seconds all cores spent on anything but idle and iowait since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICK


async def settle(watched: Watched, *, below: float = 0.1, window: float = 0.5, limit: float = 30.0) -> float:
    """Wait until the system under test is nearly idle (the previous point's backlog drained,
    projections caught up), so one point's leftovers do not weigh on the next. Only our processes
    count: other work on a shared machine is shown per point as `others`, not waited for.
    Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = watched.snapshot()
        await asyncio.sleep(window)
        used = Watched.cores_used(before, watched.snapshot())
        if sum(v for k, v in used.items() if k != "machine") < below:
            break
    return time.monotonic() - started


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the peak) of a process, in kB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found
