"""The event bus: NATS JetStream connection, streams, publisher and consumer loop."""

from __future__ import annotations

import nats
from nats.aio.client import DEFAULT_PENDING_SIZE, Client

from shared.bus.consumer import Consumer
from shared.bus.deadletters import subject_for as deadletter_subject
from shared.bus.publisher import publish
from shared.bus.streams import STREAMS, ensure_streams
from shared.bus.subscription import Handler, Subscription


def servers(url: str) -> list[str]:
    """NATS_URL as a server list: "nats://a:4222,nats://b:4222" names the nodes of a cluster. nats-py takes
    a list; it reads a comma-joined string as one URL and refuses it as invalid."""
    return [server.strip() for server in url.split(",") if server.strip()]


async def connect(url: str, name: str, *, pending_size: int = DEFAULT_PENDING_SIZE) -> Client:
    """Every connection to NATS goes through here, so a cluster's comma-separated URL works for all of them.
    nats-py shuffles the list (connections spread over the nodes) and, on a lost connection, tries the
    next node in it and those the cluster told it about."""
    # Reconnect forever: a NATS restart (or a cluster node's death) must not take a service down with it.
    return await nats.connect(
        servers(url), name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5, pending_size=pending_size
    )


__all__ = [
    "STREAMS",
    "Consumer",
    "Handler",
    "Subscription",
    "connect",
    "deadletter_subject",
    "ensure_streams",
    "publish",
    "servers",
]
