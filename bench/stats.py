"""What one measured point adds up to: throughput, latency percentiles, and every non-201 answer."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

PERCENTILES = (50, 95, 99)


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest sample that at least p% of the samples do not exceed.

    No interpolation: every figure reported is a latency some request really had.
    """
    if not ordered:
        return math.nan
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is outside (0, 100]")
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[rank - 1]


@dataclass
class Point:
    """One target at one client count, over a fixed window."""

    target: str
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, of the successful requests only
    answers: Counter[str] = field(default_factory=Counter)  # "201", "402", "ConnectionResetError" ...
    client_cpu: float = 0.0  # CPU seconds the load generator's process spent in the window
    cpu_by_process: dict[str, float] = field(default_factory=dict)  # share of one core, per process

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def errors(self) -> int:
        return sum(self.answers.values()) - self.ok

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def latency_ms(self, p: float) -> float:
        return percentile(sorted(self.latencies), p) * 1000

    def as_dict(self) -> dict[str, object]:
        ordered = sorted(self.latencies)
        done = sum(self.answers.values())
        return {
            "target": self.target,
            "clients": self.clients,
            "seconds": round(self.seconds, 3),
            "ok": self.ok,
            "per_second": round(self.rate, 1),
            **{f"p{p}_ms": _ms(percentile(ordered, p)) for p in PERCENTILES},
            "errors": self.errors,
            "answers": dict(self.answers),
            "client_cpu_us_per_request": round(self.client_cpu / done * 1e6, 1) if done else None,
            "cpu_cores_by_process": {k: round(v, 2) for k, v in self.cpu_by_process.items()},
        }


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 2)
