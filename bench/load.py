"""Fixed-duration closed-loop load: N virtual clients, each sending its next request as soon as the
previous one is answered, for a warm-up and then a measured window.

A request counts in the window in which it completes; only the target's success answer (201 for a
debit) counts as done and gives a latency; anything else is tallied by status or exception name.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Sequence

import nats.aio.client

from bench.cpu import Watched, shares
from bench.http_client import Connection, RequestFactory
from bench.stats import Point

# One operation of a virtual client, answering a label: "201", "402", "TimeoutError" ...
Call = Callable[[], Awaitable[str]]

# After the window, how long the stragglers may take before they are cancelled (a hung server).
GRACE_SECONDS = 10.0


async def measure(
    target: str, calls: Sequence[Call], *, ok: str, warmup: float, duration: float, watched: Watched
) -> Point:
    point = Point(target, len(calls), duration)
    start = time.perf_counter() + warmup
    end = start + duration

    async def drive(call: Call) -> None:
        while (sent := time.perf_counter()) < end:
            try:
                answer = await call()
            except Exception as error:  # counted, and the client goes on (a new connection if need be)
                answer = type(error).__name__
                await asyncio.sleep(0.01)  # a dead target must not turn this loop into a busy spin
            done = time.perf_counter()
            if start <= done <= end:
                point.answers[answer] += 1
                if answer == ok:
                    point.latencies.append(done - sent)

    async def account() -> None:
        await asyncio.sleep(warmup)
        before, cpu_before = watched.snapshot(), time.process_time()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        after, cpu_after = watched.snapshot(), time.process_time()
        point.client_cpu = cpu_after - cpu_before
        point.cpu_by_process = shares(before, after, point.client_cpu)

    tasks = [asyncio.create_task(drive(call)) for call in calls]
    await account()
    _, stuck = await asyncio.wait(tasks, timeout=GRACE_SECONDS)
    for task in stuck:
        task.cancel()
    if stuck:
        point.answers["unanswered"] += len(stuck)
    return point


def http_calls(host: str, port: int, clients: int, request: RequestFactory) -> tuple[list[Call], list[Connection]]:
    """One connection per virtual client; requests numbered across all clients, so consecutive ones
    (those in flight together) go to different accounts."""
    numbers = itertools.count()
    connections = [Connection(host, port) for _ in range(clients)]

    def call_on(connection: Connection) -> Call:
        async def call() -> str:
            status, _ = await connection.send(request(next(numbers)))
            return str(status)

        return call

    return [call_on(c) for c in connections], connections


def nats_calls(
    nc: nats.aio.client.Client, subject: str, clients: int, payload: Callable[[int], bytes], timeout: float = 10.0
) -> list[Call]:
    """N virtual clients sharing one NATS connection, as a service calling the ledger would."""
    numbers = itertools.count()

    async def call() -> str:
        reply = await nc.request(subject, payload(next(numbers)), timeout=timeout)
        return str(json.loads(reply.data)["status"])

    return [call] * clients
