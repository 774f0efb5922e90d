"""The loop every relay runs: move stored events to the bus in batches, at once when a local write
wakes it, otherwise on a short poll (for writes made by other processes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod

log = logging.getLogger(__name__)


class Relay(ABC):
    def __init__(self, poll_interval: float) -> None:
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    @abstractmethod
    async def relay_once(self) -> int:
        """Publish the next batch; return how many stored events it moved past (0 when idle)."""

    async def run(self) -> None:
        while True:
            try:
                moved = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; retrying", type(self).__name__)
                moved = 0
                await asyncio.sleep(1)
            if moved:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
