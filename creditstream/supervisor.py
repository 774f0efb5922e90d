"""Keeping the services of `creditstream up` running: a service that exits without being asked is
restarted with backoff while the rest keeps running, and Ctrl-C (or SIGTERM, SIGHUP) is a flag the main
thread checks between steps, so no child is ever left half started."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Literal

import httpx
from rich.console import Console
from rich.text import Text

from shared.testing.servers import ServiceProcess
from shared.testing.waiting import wait_until

COLOURS = {"projections": "cyan", "identity": "magenta", "ledger": "green", "payments": "yellow", "media": "blue"}
# SIGHUP too: when the terminal closes, children in sessions of their own would otherwise outlive us.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
START_TIMEOUT = 120.0
FIRST_BACKOFF, MAX_BACKOFF, STABLE_AFTER = 1.0, 30.0, 60.0
TICK = 0.25


class StopRequested(Exception):
    pass


class StartupError(RuntimeError):
    pass


class StopRequest:
    """Ctrl-C, SIGTERM or SIGHUP, kept as a flag that the main thread checks between steps. Raising from
    the handler could cut the start or restart of a child in half and leave it running, owned by no one.
    The handler takes no lock either (not even an Event's): it runs in the main thread, which may hold it."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        self.signal = self.signal or signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds`, less if a stop is requested meanwhile; True if one is."""
        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
        return self.requested

    def checkpoint(self) -> None:
        if self.requested:
            raise StopRequested(self.signal)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        previous = {sig: signal.signal(sig, self) for sig in STOP_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class Output:
    """Our messages and the services' log lines through one lock, as plain text: a log line is not
    markup (one holding "[/x]" raised in its reader thread, which then stopped draining that pipe)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._lock = threading.Lock()

    def say(self, message: str, style: str = "") -> None:
        self._print(Text(message, style=style))

    def echo(self, name: str, line: str) -> None:
        self._print(Text.assemble((f"{name:>11} |", COLOURS.get(name, "white")), " ", line))

    def _print(self, text: Text) -> None:
        # OSError: the terminal is gone (SIGHUP) or the pipe closed; the pipes are drained and all stopped anyway.
        with self._lock, suppress(OSError):
            self.console.print(text)


def wait_or_stop(condition: Callable[[], bool], stop: StopRequest, *, timeout: float, what: str) -> None:
    """`wait_until` that gives up as soon as a stop is requested."""

    def done() -> bool:
        stop.checkpoint()
        return condition()

    wait_until(done, timeout=timeout, interval=0.1, what=what)


def ended(code: int | None) -> str:
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def readiness_problem(process: ServiceProcess) -> str | None:
    """None when /readyz says ready, else why not: its problem detail (what is unreachable or stopped)."""
    try:
        response = httpx.get(f"{process.url}/readyz", timeout=5)
    except httpx.HTTPError as exc:
        return f"/readyz did not answer ({type(exc).__name__})"
    if response.status_code == 200:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail) if detail else f"/readyz answered {response.status_code}"


@dataclass
class Watched:
    process: ServiceProcess
    state: Literal["starting", "up", "down"] = "starting"
    since: float = 0.0  # when it entered `state` (monotonic)
    restart_at: float = 0.0
    backoff: float = FIRST_BACKOFF


class Supervisor:
    """Keeps the services running: one that exits without being asked is restarted after a backoff
    (1 s, 2 s, 4 s … 30 s; back to 1 s once it had stayed up a minute); the others are left alone."""

    def __init__(self, processes: list[ServiceProcess], out: Output) -> None:
        self.processes = processes
        self._watched = [Watched(p) for p in processes]
        self._out = out

    def start_all(self, stop: StopRequest) -> None:
        """Start every service; wait until each has done its start-up: /healthz, not /readyz, since an
        alarm keeps a service unready for good and that is for the operator to read, not a reason to
        refuse to run. One that exits now fails the command: a restart would not mend its config."""
        for w in self._watched:
            w.process.start()
            w.since = time.monotonic()
        wait_or_stop(self._all_started, stop, timeout=START_TIMEOUT, what="the services' start-up")

    def _all_started(self) -> bool:
        for w in self._watched:
            if (code := w.process.exit_code()) is not None:
                w.process.join_output()
                raise StartupError(f"{w.process.name} {ended(code)} during start-up (its log is above)")
            if w.state == "starting" and w.process.started():
                w.state, w.since = "up", time.monotonic()
        return all(w.state == "up" for w in self._watched)

    def warn_unready(self, processes: list[ServiceProcess] | None = None) -> None:
        for process in processes or self.processes:
            if problem := readiness_problem(process):
                self._out.say(f"{process.name} is up but not ready: {problem}", "yellow")

    def watch(self, stop: StopRequest) -> None:
        """Until a stop is requested."""
        while not stop.sleep(TICK):
            now = time.monotonic()
            for w in self._watched:
                self._step(w, now)

    def _step(self, w: Watched, now: float) -> None:
        if w.state == "down":
            if now >= w.restart_at:
                self._restart(w, now)
        elif (code := w.process.exit_code()) is not None:
            self._died(w, code, now)
        elif w.state == "starting":
            self._check_started(w, now)

    def _died(self, w: Watched, code: int | None, now: float) -> None:
        w.process.join_output()  # its last lines first, then our verdict
        if w.state == "up" and now - w.since >= STABLE_AFTER:
            w.backoff = FIRST_BACKOFF
        self._out.say(
            f"{w.process.name} (pid {w.process.pid}) {ended(code)}; restarting it in {w.backoff:g} s", "bold red"
        )
        w.state, w.restart_at = "down", now + w.backoff
        w.backoff = min(w.backoff * 2, MAX_BACKOFF)

    def _restart(self, w: Watched, now: float) -> None:
        w.process.restart()
        w.state, w.since = "starting", now
        self._out.say(f"{w.process.name} restarted (pid {w.process.pid}); waiting for its start-up", "bold")

    def _check_started(self, w: Watched, now: float) -> None:
        try:
            started = w.process.started()
        except RuntimeError:  # it exited since we looked: the next step restarts it
            return
        if started:
            w.state, w.since = "up", now
            self._out.say(f"{w.process.name} is back (pid {w.process.pid})", "bold green")
            self.warn_unready([w.process])
        elif now - w.since > START_TIMEOUT:
            self._out.say(f"{w.process.name} did not finish start-up in {START_TIMEOUT:g} s; killing it", "red")
            self._died(w, w.process.stop(signal.SIGKILL), now)

    def stop_all(self) -> None:
        """SIGTERM to every service at once (each may take its graceful timeout), then wait for each."""
        for process in self.processes:
            if process.process and process.process.poll() is None:
                process.process.send_signal(signal.SIGTERM)
        for process in self.processes:
            process.stop()
            process.join_output()
