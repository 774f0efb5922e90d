"""What every service holds while it runs: its database pool, its NATS connection, its background
loops. Opened in the service's lifespan, closed in reverse on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from shared import bus, db, metrics, migrations
from shared.access import Eraser
from shared.bus import Consumer, Subscription, deadletters
from shared.bus.users import USERS
from shared.outbox import OutboxRelay
from shared.relay import Relay
from shared.settings import Settings

# What an operator must see and act on (None: nothing): a parked message, a stuck relay, a refusal by NATS.
# GET /alarms shows them; none of them makes a copy unready, as it would not serve any better out of service.
Alarm = Callable[[], Awaitable[str | None]]
# A background loop that failed this recently is an alarm.
LOOP_FAILURE_SHOWN_SECONDS = 60.0
# Sets the gauges of something that is a state (a backlog, a count of pending messages) when /metrics is read.
Sampler = Callable[[], Awaitable[None]]
# How long /metrics waits for its samples: a scrape must answer even when NATS or the database does not.
SAMPLE_SECONDS = 3.0


log = logging.getLogger(__name__)


@dataclass
class Runtime:
    service: str
    settings: Settings
    pool: AsyncConnectionPool
    nc: Client
    js: JetStreamContext
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    redrivers: dict[str, deadletters.Redriver] = field(default_factory=dict)  # per durable consumer run here
    # A loop's failures since it started: how many, the last one's kind and when (time.monotonic()).
    failures: dict[str, tuple[int, str, float]] = field(default_factory=dict)
    samplers: list[Sampler] = field(default_factory=list)
    consumers: list[tuple[str, str]] = field(default_factory=list)  # (stream, durable) of each consumer run
    erasers: list[Eraser] = field(default_factory=list)  # run for each identity.user.erased (shared/access.py)

    def __post_init__(self) -> None:
        self.alarms.append(self._loops_failing)
        self.samplers.append(self._sample_consumers)
        self.samplers.append(self._sample_readiness)

    def spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run `loop` in the background, restarting it with a delay if it ever fails."""

        async def supervised() -> None:
            while True:
                try:
                    await loop()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.exception("%s: background loop %s failed; restarting", self.service, name)
                    count = self.failures.get(name, (0, "", 0.0))[0] + 1
                    self.failures[name] = (count, type(exc).__name__, time.monotonic())
                    await asyncio.sleep(1.0)

        self.tasks.append(asyncio.create_task(supervised(), name=f"{self.service}:{name}"))

    async def _loops_failing(self) -> str | None:
        now, shown = time.monotonic(), []
        for name, (count, kind, at) in sorted(self.failures.items()):
            if now - at < LOOP_FAILURE_SHOWN_SECONDS:
                shown.append(f"{name} ({count} failures, the last {now - at:.0f}s ago: {kind})")
        return f"background loops fail and restart: {', '.join(shown)}" if shown else None

    def consume(self, subscription: Subscription) -> None:
        """Run a durable consumer, answer re-drives of what it parks, and alarm while it has any parked."""
        consumer = Consumer(
            self.js, subscription, max_deliver=self.settings.max_deliver, ack_wait=self.settings.ack_wait_seconds
        )
        self.spawn(subscription.durable, consumer.run)
        redriver = deadletters.Redriver(self.js, subscription)
        self.spawn(f"{subscription.durable}-redrive", lambda: redriver.run(self.nc))
        if not self.redrivers:
            self.alarms.append(lambda: deadletters.parked_problem(self.js, self.redrivers))
        self.redrivers[subscription.durable] = redriver
        self.consumers.append((subscription.stream, subscription.durable))

    def start_relay(self, name: str, relay: Relay) -> None:
        self.spawn(name, relay.run)

        async def stuck() -> str | None:
            return relay.problem()

        async def backlog() -> None:
            metrics.RELAY_BACKLOG.set(await relay.backlog(), {"relay": name})

        self.alarms.append(stuck)
        self.samplers.append(backlog)

    def start_outbox_relay(self) -> OutboxRelay:
        relay = OutboxRelay(self.pool, self.js)
        self.start_relay("outbox-relay", relay)
        return relay

    async def not_ready(self) -> str | None:
        """Why this process cannot serve now, in words for operators; None when it can: its database and NATS
        answer and its background loops run. What it can serve through (a parked message, a stuck relay) is an
        alarm instead: `problems`.

        Anything that fails says only what failed: an exception's own text can name hosts, users and connection
        strings, so it goes to the log."""
        try:
            async with self.pool.connection() as conn:
                await conn.execute("SELECT 1")
        except Exception:
            log.warning("%s: not ready: the database is unreachable", self.service, exc_info=True)
            return "database unreachable"
        if not self.nc.is_connected:
            return "NATS is not connected"
        try:
            await self.js.account_info()
        except Exception:
            log.warning("%s: not ready: JetStream does not answer", self.service, exc_info=True)
            return "NATS unreachable"
        if stopped := sorted(task.get_name() for task in self.tasks if task.done()):
            return f"background loops stopped: {', '.join(stopped)}"
        return None

    async def sample(self) -> None:
        """Bring the sampled gauges up to date (what could not be read keeps its last value, and is logged)."""
        try:
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(sampler() for sampler in self.samplers), return_exceptions=True), SAMPLE_SECONDS
            )
        except TimeoutError:
            log.warning("%s: metrics: the samples took longer than %ss", self.service, SAMPLE_SECONDS)
            return
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                log.warning("%s: metrics: a sample failed: %s", self.service, type(outcome).__name__)

    async def _sample_readiness(self) -> None:
        metrics.READY.set(0 if await self.not_ready() else 1)

    async def _sample_consumers(self) -> None:
        if not self.consumers:
            return
        parked = await deadletters.counts(self.js)
        for stream, durable in self.consumers:
            info = await self.js.consumer_info(stream, durable)
            labels = {"consumer": durable}
            metrics.CONSUMER_PENDING.set((info.num_pending or 0) + (info.num_ack_pending or 0), labels)
            metrics.DEADLETTERS.set(parked[durable], labels)

    async def problems(self) -> list[str]:
        """The alarms raised now, as written to be shown."""
        raised = []
        for alarm in self.alarms:
            try:
                problem = await alarm()
            except Exception:
                log.warning("%s: an alarm could not be checked", self.service, exc_info=True)
                problem = "an alarm could not be checked"
            if problem:
                raised.append(problem)
        return raised


def _refused(nc: Client) -> Alarm:
    async def alarm() -> str | None:
        return bus.refusals(nc).problem()

    return alarm


@contextlib.asynccontextmanager
async def running(service: str, settings: Settings) -> AsyncIterator[Runtime]:
    """On a schema that has every migration of this code (else SchemaBehindError), connect to NATS, check
    the streams."""
    await migrations.require(settings.database_url, service, migrations.plan(service))
    pool = await db.open_pool(settings.database_url, service)
    nc = await bus.connect(settings.nats_url, service, bus.login(settings))
    js = nc.jetstream()
    user = USERS.get(settings.nats_user or "")
    # Created by ops (`creditstream up`, `creditstream streams ensure`); a service may not create them.
    await bus.require_streams(js, user.streams if user else bus.STREAMS)
    runtime = Runtime(service, settings, pool, nc, js)
    runtime.alarms.append(_refused(nc))
    try:
        yield runtime
    finally:
        for task in runtime.tasks:
            task.cancel()
        await asyncio.gather(*runtime.tasks, return_exceptions=True)
        for close in reversed(runtime.closers):
            close()
        # Our loops are cancelled and every handled message is acked: nothing is left to drain.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 5)
        await pool.close()
