"""One trace per user action: the trace context written with an outbox event reaches the consumer
through the NATS headers."""

from __future__ import annotations

import asyncio
import contextlib

from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from psycopg_pool import AsyncConnectionPool

from shared import outbox
from shared.bus import Consumer, Subscription
from shared.contracts import Envelope
from shared.contracts.identity import UserReactivated
from shared.outbox import OutboxRelay
from shared.testing.waiting import eventually


async def test_the_consumer_span_continues_the_trace_of_the_request_that_wrote_the_event(
    pool: AsyncConnectionPool, js: JetStreamContext
) -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("test")
    seen: list[int] = []

    async def handler(envelope: Envelope, seq: int) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)

    with tracer.start_as_current_span("POST /api/admin/users/u1/reactivate") as request_span:
        async with pool.connection() as conn, conn.transaction():
            await outbox.add(conn, Envelope.wrap(UserReactivated(user_id="u1"), user_id="u1"))
    await OutboxRelay(pool, js).relay_once()

    task = asyncio.create_task(Consumer(js, Subscription("IDENTITY", "traced", ("identity.>",), handler)).run())
    try:

        async def handled() -> bool:
            return bool(seen)

        await eventually(handled, within=15, what="the event to be consumed")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert seen == [request_span.get_span_context().trace_id]
    assert seen[0] != 0
