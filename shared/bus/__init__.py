"""The event bus: NATS JetStream connection, streams, publisher and consumer loop."""

from __future__ import annotations

from shared.bus.connection import Login, connect, login, refusals, servers
from shared.bus.consumer import Consumer
from shared.bus.deadletters import subject_for as deadletter_subject
from shared.bus.publisher import publish
from shared.bus.streams import STREAMS, ensure_streams, require_streams
from shared.bus.subscription import Handler, Subscription

__all__ = [
    "STREAMS",
    "Consumer",
    "Handler",
    "Login",
    "Subscription",
    "connect",
    "deadletter_subject",
    "ensure_streams",
    "login",
    "publish",
    "refusals",
    "require_streams",
    "servers",
]
