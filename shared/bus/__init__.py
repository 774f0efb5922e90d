"""The event bus: NATS JetStream connection, streams, publisher and consumer loop."""

from __future__ import annotations

import nats
from nats.aio.client import Client

from shared.bus.consumer import Consumer
from shared.bus.deadletters import subject_for as deadletter_subject
from shared.bus.publisher import publish
from shared.bus.streams import STREAMS, ensure_streams
from shared.bus.subscription import Handler, Subscription


async def connect(url: str, name: str) -> Client:
    # Reconnect forever: a NATS restart must not take a service down with it.
    return await nats.connect(url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5)


__all__ = [
    "STREAMS",
    "Consumer",
    "Handler",
    "Subscription",
    "connect",
    "deadletter_subject",
    "ensure_streams",
    "publish",
]
