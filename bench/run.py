"""One run of the benchmark against a started system: the points in order, then the figures as a dict
(what bench/report.py prints and writes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from bench import cpu, lag, long_account, machine, pgbench, system
from bench.http_client import RequestFactory, get, post
from bench.load import http_calls, measure, nats_calls
from bench.stats import Point, percentile
from bench.users import User, bearer, sign_in

CLIENTS = (1, 8, 32)
DEBIT = b'{"amount":1}'
console = Console(stderr=True, log_path=False, width=120)


def debits(port: int, users: list[User], label: str) -> RequestFactory:
    """Debit n goes to account n mod len(users), with that user's token and a key of its own."""
    host = f"127.0.0.1:{port}"
    prepared = [(f"/api/accounts/{u.user_id}/debits", bearer(u.token)) for u in users]

    def request(n: int) -> bytes:
        path, auth = prepared[n % len(prepared)]
        return post(host, path, {**auth, "Idempotency-Key": f"{label}-{n}"}, DEBIT)

    return request


def rpc_debits(users: list[User], label: str) -> Callable[[int], bytes]:
    """The same debits as `debits`, as ledger.rpc.debit payloads (no token: NATS permissions guard it)."""

    def payload(n: int) -> bytes:
        return json.dumps({"user_id": users[n % len(users)].user_id, "key": f"{label}-{n}", "amount": 1}).encode()

    return payload


class Run:
    def __init__(self, sut: system.System, args: argparse.Namespace, began: float) -> None:
        self.sut = sut
        self.args = args
        self.began = began
        self.watched = cpu.Watched(sut.pids())
        self.points: list[Point] = []

    def log(self, message: str) -> None:
        console.log(f"[{time.monotonic() - self.began:5.0f} s] {message}")

    async def settle(self) -> None:
        waited = await cpu.settle(self.watched)
        if waited > 2:
            self.log(f"waited {waited:.0f} s for the system under test to go idle")

    async def http(self, target: str, port: int, clients: int, request: RequestFactory, ok: str = "201") -> Point:
        await self.settle()
        calls, connections = http_calls("127.0.0.1", port, clients, request)
        point = await measure(
            target, calls, ok=ok, warmup=self.args.warmup, duration=self.args.duration, watched=self.watched
        )
        for connection in connections:
            await connection.close()
        return self.done(point)

    def done(self, point: Point) -> Point:
        self.log(
            f"{point.target}, {point.clients} clients: {point.rate:,.0f}/s,"
            f" p99 {point.latency_ms(99):.1f} ms, {point.errors} errors"
        )
        return point

    async def everything(self) -> dict[str, Any]:
        a, sut = self.args, self.sut
        users = await sign_in(sut, a.accounts + 1)
        users, prober = users[:-1], users[-1]
        self.log(f"{len(users)} users signed in and granted credits (+1 for the lag probe)")
        ceiling = await self.baselines(users)
        lag_under_load = await self.ledger_over_http(users, prober)
        await self.ledger_over_nats(users)
        await self.settle()
        lag_idle = await lag.probe(sut.services["ledger"].port, prober, sut.database_url, after=0, duration=3)
        memory = self.memory()
        long = None
        if a.entries:
            self.log(f"writing an account of {a.entries:,} entries ...")
            long = await long_account.measure(sut.database_url, a.entries)
            self.log(f"long account: load {long['load_ms']} ms, one debit {long['debit_ms']} ms")
        return {
            "machine": await machine.describe(sut.database_url),
            "settings": {"warmup_s": a.warmup, "duration_s": a.duration, "accounts": a.accounts},
            "client_ceiling": ceiling.as_dict(),
            "points": [p.as_dict() for p in self.points],
            "ratios": self.ratios(),
            "projection_lag": {"under 32-client HTTP load": _lag(*lag_under_load), "idle": _lag(*lag_idle)},
            "long_account": long,
            "memory": memory,
        }

    async def baselines(self, users: list[User]) -> Point:
        """The client's own ceiling, the naive service, pgbench; returns the ceiling."""
        port = self.sut.naive.port
        health = get(f"127.0.0.1:{port}", "/healthz")
        ceiling = await self.http("client ceiling (GET /healthz)", port, 32, lambda n: health, ok="200")
        for clients in CLIENTS:
            request = debits(port, users, f"naive{clients}")
            self.points.append(await self.http("naive FastAPI service", port, clients, request))
        await self.settle()
        await pgbench.seed(self.sut.database_url, balance=10**12)
        a = self.args
        point = await pgbench.run(
            self.sut.database_url, max(CLIENTS), warmup=a.warmup, duration=a.duration, watched=self.watched
        )
        self.points.append(self.done(point))
        return ceiling

    async def ledger_over_http(self, users: list[User], prober: User) -> tuple[list[float], int]:
        """The ledger's HTTP debits; returns the projection lag probed during the heaviest load."""
        port, a = self.sut.services["ledger"].port, self.args
        for clients in CLIENTS[:-1]:
            request = debits(port, users, f"http{clients}")
            self.points.append(await self.http("ledger over HTTP", port, clients, request))
        clients = CLIENTS[-1]
        # The probe is one more client, on an account of its own, from the warm-up's end to the window's.
        loaded, lags = await asyncio.gather(
            self.http("ledger over HTTP", port, clients, debits(port, users, f"http{clients}")),
            lag.probe(port, prober, self.sut.database_url, after=a.warmup + 0.5, duration=a.duration - 1),
        )
        self.points.append(loaded)
        return lags

    async def ledger_over_nats(self, users: list[User]) -> None:
        # As the media worker, the one user NATS lets call the ledger's request/reply API (shared/bus/users.py).
        nc = await self.sut.nats.connect("media-worker", "bench")
        try:
            for clients in CLIENTS:
                await self.settle()
                calls = nats_calls(nc, "ledger.rpc.debit", clients, rpc_debits(users, f"rpc{clients}"))
                point = await measure(
                    "ledger over NATS req/reply",
                    calls,
                    ok="201",
                    warmup=self.args.warmup,
                    duration=self.args.duration,
                    watched=self.watched,
                )
                self.points.append(self.done(point))
        finally:
            await nc.close()

    def rate(self, target: str, clients: int) -> float:
        return next(p.rate for p in self.points if p.target.startswith(target) and p.clients == clients)

    def ratios(self) -> dict[str, dict[str, float]]:
        naive, pg = self.rate("naive", 32), self.rate("pgbench", 32)
        return {
            path: {"naive_service": self.rate(path, 32) / naive, "pgbench": self.rate(path, 32) / pg}
            for path in ("ledger over HTTP", "ledger over NATS req/reply")
        }

    def memory(self) -> dict[str, dict[str, float]]:
        """Each service's resident memory after the load (and its peak), in MB."""
        found = {}
        for name, (pid, _) in self.sut.pids().items():
            if name != "postgres":  # many processes sharing buffers: RSS would count them twice
                kb = cpu.memory_kb(pid)
                found[name] = {"rss_mb": round(kb["VmRSS"] / 1024, 1), "peak_mb": round(kb["VmHWM"] / 1024, 1)}
        return found


def _lag(lags: list[float], unseen: int) -> dict[str, Any]:
    ordered = sorted(lags)
    ms = {f"p{p}_ms": round(percentile(ordered, p) * 1000, 1) if ordered else None for p in (50, 99)}
    return {
        **ms,
        "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
        "mean_ms": round(statistics.fmean(ordered) * 1000, 1) if ordered else None,
        "samples": len(ordered),
        "unseen": unseen,
    }
