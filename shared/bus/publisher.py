"""Publishing with the event id as `Nats-Msg-Id`, retried on timeout.

A timed-out publish may still be stored after a reconnect; retrying with the same message id is
safe because JetStream drops the second copy inside the duplicate window.
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError

log = logging.getLogger(__name__)

RETRYABLE = (nats.errors.TimeoutError, NoStreamResponseError, nats.errors.ConnectionReconnectingError)


async def publish(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    *,
    msg_id: str,
    headers: dict[str, str] | None = None,
    attempts: int = 8,
    ack_timeout: float = 5.0,
) -> PubAck:
    all_headers = {**(headers or {}), "Nats-Msg-Id": msg_id}
    delay = 0.1
    for attempt in range(1, attempts + 1):
        try:
            return await js.publish(subject, payload, timeout=ack_timeout, headers=all_headers)
        except RETRYABLE:
            if attempt == attempts:
                raise
            log.warning("publish of %s timed out (attempt %d); retrying", msg_id, attempt)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")
