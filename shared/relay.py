"""The loop every relay runs: move stored events to the bus in batches, at once when a local write
wakes it, otherwise on a short poll (for writes made by other processes).

A relay never skips what it cannot publish (the stream's order is the product), so one that keeps
failing is an alarm: `problem()` names the error once it has lasted `stuck_after` seconds, and the
service's GET /alarms reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod

log = logging.getLogger(__name__)

STUCK_AFTER_SECONDS = 5.0


class Relay(ABC):
    def __init__(self, poll_interval: float, *, stuck_after: float = STUCK_AFTER_SECONDS) -> None:
        self._poll_interval = poll_interval
        self._stuck_after = stuck_after
        self._wake = asyncio.Event()
        self._failing_since: float | None = None
        self._last_error = ""

    def wake(self) -> None:
        self._wake.set()

    @abstractmethod
    async def relay_once(self) -> int:
        """Publish the next batch; return how many stored events it moved past (0 when idle)."""

    @abstractmethod
    async def backlog(self) -> int:
        """How many stored events wait to be published."""

    def problem(self) -> str | None:
        """Why this relay is stuck, once it has failed without a success for `stuck_after` seconds."""
        if self._failing_since is None:
            return None
        failing = time.monotonic() - self._failing_since
        if failing < self._stuck_after:
            return None
        return f"{type(self).__name__} has failed for {failing:.0f}s: {self._last_error}"

    async def run(self) -> None:
        while True:
            try:
                moved = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s failed; retrying", type(self).__name__)
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                self._last_error = f"{type(exc).__name__}: {exc}"[:500]
                moved = 0
                await asyncio.sleep(1)
            else:
                self._failing_since = None
            if moved:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
