"""Waiting for what runs in other processes: a free port to give one, an open port, a condition with a
deadline (never a sleep and hope), a process to stop."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or condition}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def eventually(condition: Callable[[], Awaitable[bool]], *, within: float, what: str = "") -> None:
    """Async `wait_until`: poll a remote condition (a stream, a consumer, a table) up to a deadline."""
    try:
        async with asyncio.timeout(within):
            while not await condition():  # noqa: ASYNC110  # the state is in another process: poll it
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise TimeoutError(f"timed out after {within}s waiting for {what or condition}") from None


def stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    """Ask a process to stop (`sig`), and kill it if it has not within `timeout`; its return code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
