"""The ledger's unit of work, one per process: commands from HTTP, NATS and event handlers queue here
and are saved in batches. While one batch is in the database the next one gathers, so the recorder's table
lock is taken once per batch instead of once per command, and commands on one account never race
each other inside a process (only across processes, where optimistic concurrency settles it)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable

from services.ledger.application import Command, Ledger, Outcome, Result
from shared import metrics, telemetry

Pending = tuple[Command, asyncio.Future[Result]]

# A command saves two events (its account's and its idempotency record). eventsourcing 9.5.6 inserts a
# save's events in one psycopg pipeline, which hung here at about 1,400 events in one save (1,200 was
# fine): keep batches well below that.
MAX_BATCH = 256


class UnitOfWork:
    def __init__(self, ledger: Ledger, on_saved: Callable[[], None] = lambda: None, max_batch: int = MAX_BATCH) -> None:
        self._ledger = ledger
        self._on_saved = on_saved
        self._max_batch = max_batch
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()

    async def submit(self, command: Command) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        with telemetry.span(f"ledger {type(command).__name__}") as span:
            # Its events go on in this span's trace, as children of the command that made them.
            command = dataclasses.replace(command, traceparent=telemetry.current_traceparent())
            await self._queue.put((command, future))
            result = await future
            span.set_attribute("ledger.outcome", _outcome(result))
        return result

    async def run(self) -> None:
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < self._max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._execute(batch)
        finally:
            # Shutting down: nobody will answer what is still queued.
            while not self._queue.empty():
                _, future = self._queue.get_nowait()
                future.cancel()

    async def _execute(self, batch: list[Pending]) -> None:
        live = [(c, f) for c, f in batch if not f.done()]
        try:
            results = await asyncio.to_thread(self._ledger.execute_batch, [c for c, _ in live])
        except asyncio.CancelledError:
            for _, future in live:
                future.cancel()
            raise
        except Exception as error:
            for command, future in live:
                metrics.LEDGER_COMMANDS.add(1, {"command": type(command).__name__, "outcome": "failed"})
                if not future.done():
                    future.set_exception(error)
            return
        metrics.LEDGER_BATCH_SIZE.record(len(live))
        for (command, future), result in zip(live, results, strict=True):
            metrics.LEDGER_COMMANDS.add(1, {"command": type(command).__name__, "outcome": _outcome(result)})
            if not future.done():
                future.set_result(result)
        with contextlib.suppress(Exception):
            self._on_saved()


def _outcome(result: Result) -> str:
    """A metric label: applied, replayed (its key seen before), or the refusal's class (a fixed set)."""
    if isinstance(result, Outcome):
        return "replayed" if result.replayed else "applied"
    return type(result).__name__
