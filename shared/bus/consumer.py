"""Durable pull consumer loop: explicit ack, bounded redelivery, a dead-letter subject."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import ServiceUnavailableError

from shared.bus import deadletters
from shared.bus.subscription import InvalidMessageError, Subscription, validated
from shared.contracts import Envelope
from shared.telemetry import consumer_batch_span, consumer_span, trace_link

log = logging.getLogger(__name__)


class Consumer:
    """Runs one durable consumer until cancelled.

    Each message is handled, then acked; while its handler works, progress beats keep it from being
    delivered elsewhere. A handler error naks it with a growing delay; after `max_deliver` deliveries
    (or at once, for a message that is not a valid contract) it is copied to
    `deadletter.<durable>.<subject>` and terminated, so one poison message never blocks the stream.
    A message delivered more often than that without an outcome (its consumer died each time, as a
    worker killed mid-job does) gets the same end, without running its handler once more.
    """

    def __init__(
        self,
        js: JetStreamContext,
        subscription: Subscription,
        *,
        max_deliver: int = 5,
        batch: int = 100,
        ack_wait: float = 30.0,
    ) -> None:
        self._js = js
        self._sub = subscription
        self._max_deliver = max_deliver
        self._batch = batch
        self._ack_wait = ack_wait

    async def _bind(self) -> JetStreamContext.PullSubscription:
        s = self._sub
        config = ConsumerConfig(
            name=s.durable,
            durable_name=s.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self._ack_wait,
            # The server never gives up on its own; we dead-letter at our own bound instead.
            max_deliver=-1,
            filter_subjects=list(s.subjects),
            max_ack_pending=10_000,
            # No num_replicas: as many as its stream's (R3 on a cluster), so its position outlives a node.
        )
        # Consumer CREATE with a name creates or updates, so a changed filter takes effect.
        await self._js.add_consumer(s.stream, config)
        return await self._js.pull_subscribe_bind(durable=s.durable, stream=s.stream)

    async def _bind_again(self) -> JetStreamContext.PullSubscription:
        """After a fetch nobody answered: on a cluster, the consumer's leader died and the next is being
        elected (seconds, while binding times out); or the consumer is gone, and binding creates it again.
        A gone stream raises, as at the start."""
        log.warning("%s: no leader answers for the consumer; binding again", self._sub.durable)
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(TimeoutError, ServiceUnavailableError):
                return await self._bind()

    async def run(self) -> None:
        psub = await self._bind()
        while True:
            try:
                msgs = await psub.fetch(min(self._batch, self._sub.fetch), timeout=1.0)
            except TimeoutError:  # an empty fetch: nats' own TimeoutError, or asyncio's from the request
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
                await asyncio.sleep(0.5)
                continue
            except ServiceUnavailableError:
                await psub.unsubscribe()
                psub = await self._bind_again()
                continue
            if self._sub.batch_handler is not None and len(msgs) > 1 and await self._handle_batch(msgs):
                continue
            for msg in msgs:
                await self._handle(msg)

    async def _handle_batch(self, msgs: list[Msg]) -> bool:
        """Apply a fetch all at once; False (nothing applied) sends each message its own way, so one
        that keeps failing is retried and parked alone."""
        assert self._sub.batch_handler is not None
        try:
            events = [(validated(msg.data), msg.metadata.sequence.stream) for msg in msgs]
        except InvalidMessageError:
            return False
        links = [trace_link(msg.subject, msg.headers or {}) for msg in msgs]
        with consumer_batch_span(self._sub.durable, len(msgs), links):
            try:
                await self._sub.batch_handler(events)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: a batch of %d failed (%s); one at a time", self._sub.durable, len(msgs), exc)
                return False
        for msg in msgs:
            await msg.ack()
        return True

    async def _handle(self, msg: Msg) -> None:
        try:
            envelope = validated(msg.data)
        except InvalidMessageError as exc:
            await self._dead_letter(msg, str(exc))
            return
        delivered = msg.metadata.num_delivered
        if delivered > self._max_deliver:
            log.error("%s: %s delivered %d times without an outcome", self._sub.durable, envelope.id, delivered)
            await self._give_up(
                msg, envelope, f"delivered {delivered - 1} times without an outcome (its consumer died?)"
            )
            return
        with consumer_span(self._sub.durable, msg.subject, msg.headers or {}):
            beats = Beats(msg, self._ack_wait / 3, self._sub.durable)
            try:
                await self._sub.handler(envelope, msg.metadata.sequence.stream)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if delivered >= self._max_deliver:
                    log.exception("%s: giving up on %s after %d deliveries", self._sub.durable, envelope.id, delivered)
                    await self._give_up(msg, envelope, f"{type(exc).__name__}: {exc}")
                else:
                    log.warning("%s: %s failed (%s), redelivering", self._sub.durable, envelope.id, exc)
                    await msg.nak(delay=min(0.2 * 2**delivered, 10.0))
                return
            finally:
                beats.stop()
        await msg.ack()

    async def _give_up(self, msg: Msg, envelope: Envelope, reason: str) -> None:
        if await self._settled(envelope, reason):
            await msg.term()
        else:
            await self._dead_letter(msg, reason)

    async def _settled(self, envelope: Envelope, reason: str) -> bool:
        """Whether the subscription settled the event it gave up on (else it is parked for an operator)."""
        if self._sub.give_up is None:
            return False
        try:
            await self._sub.give_up(envelope, reason)
        except Exception:
            log.exception("%s: could not settle %s; parking it", self._sub.durable, envelope.id)
            return False
        return True

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        await deadletters.park(self._js, msg, self._sub.durable, reason)
        await msg.term()


class Beats:
    """Tells the server, a few times per ack wait, that a message is still being worked on. A timer until a
    beat is due, not a task: most handlers are done long before, and a task per message would cost them."""

    def __init__(self, msg: Msg, every: float, durable: str) -> None:
        self._msg, self._every, self._durable = msg, every, durable
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(every, self._beat)
        self._sending: asyncio.Task[None] | None = None

    def _beat(self) -> None:
        self._sending = self._loop.create_task(self._send())
        self._timer = self._loop.call_later(self._every, self._beat)

    async def _send(self) -> None:
        try:
            await self._msg.in_progress()
        except nats.errors.Error as exc:  # a lost beat costs at most a duplicate delivery, which is harmless
            log.warning("%s: a progress beat failed (%s)", self._durable, exc)

    def stop(self) -> None:
        self._timer.cancel()
        if self._sending is not None:
            self._sending.cancel()
