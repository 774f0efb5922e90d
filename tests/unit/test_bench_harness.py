"""The benchmark's own pieces (bench/): its percentile math, its HTTP client, its measuring loop.
The benchmark itself is `make bench`, never a test: it prints figures and asserts none."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from bench.cpu import Watched
from bench.http_client import Connection, ProtocolError, get, post
from bench.load import measure
from bench.stats import Point, percentile

Reply = Callable[[bytes], bytes]


def test_a_percentile_is_the_nearest_rank_sample() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert [percentile(samples, p) for p in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert percentile([0.25, 0.5, 3.0], 50) == 0.5  # a latency some request really had, not an average
    assert percentile([7.0], 99) == 7.0


def test_a_percentile_of_nothing_is_not_a_number_and_a_bad_rank_is_refused() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_a_point_counts_only_successes_as_done_and_everything_else_as_errors() -> None:
    point = Point("t", 2, seconds=2.0, latencies=[0.001, 0.002, 0.003, 0.004])
    point.answers.update({"201": 4, "402": 1, "ConnectionResetError": 1})
    summary = point.as_dict()
    assert (point.rate, point.errors) == (2.0, 2)
    assert (summary["p50_ms"], summary["p99_ms"]) == (2.0, 4.0)


def length_of(head: bytes) -> int:
    lengths = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
    return lengths[0] if lengths else 0


@asynccontextmanager
async def server(reply: Reply) -> AsyncIterator[tuple[int, list[int]]]:
    """A loopback HTTP/1.1 server answering each request with `reply(request head)`; yields its port
    and a list that grows by one per connection accepted."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                await reader.readexactly(length_of(head))
                writer.write(reply(head))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with listening:
        yield listening.sockets[0].getsockname()[1], accepted


def answer(status: int, body: bytes, *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_the_client_reads_each_answer_by_its_length_on_one_kept_alive_connection() -> None:
    async with server(lambda head: answer(201, b'{"id":"' + head.split(b" ")[1] + b'"}')) as (port, accepted):
        connection = Connection("127.0.0.1", port)
        first = await connection.send(post(f"127.0.0.1:{port}", "/a", {"Idempotency-Key": "k1"}, b'{"amount":1}'))
        second = await connection.send(get(f"127.0.0.1:{port}", "/b"))
        await connection.close()
    assert (first, second) == ((201, b'{"id":"/a"}'), (201, b'{"id":"/b"}'))
    assert len(accepted) == 1


async def test_the_client_opens_a_new_connection_after_the_server_closes_one() -> None:
    async with server(lambda head: answer(200, b"{}", "Connection: close")) as (port, accepted):
        connection = Connection("127.0.0.1", port)
        for _ in range(2):
            assert await connection.send(get(f"127.0.0.1:{port}", "/")) == (200, b"{}")
        await connection.close()
    assert len(accepted) == 2


async def test_an_answer_without_a_length_is_an_error_not_a_hang() -> None:
    async with server(lambda head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") as (port, _):
        connection = Connection("127.0.0.1", port)
        with pytest.raises(ProtocolError):
            await connection.send(get(f"127.0.0.1:{port}", "/"))


async def test_a_measured_window_counts_what_completes_in_it_and_tallies_refusals() -> None:
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.002)
        return "402" if calls % 4 == 0 else "201"

    point = await measure("fake", [call, call], ok="201", warmup=0.05, duration=0.3, watched=Watched({}))
    assert point.ok > 0 and point.errors > 0
    assert set(point.answers) == {"201", "402"}
    assert point.ok == len(point.latencies) == point.answers["201"]
    assert sum(point.answers.values()) < calls  # the warm-up's requests are not counted
    assert {"client", "machine", "others"} <= set(point.cpu_by_process)
