"""What the routes take from what the lifespan put on `app.state`, typed: the database pool, JetStream, the
replayer (the live stream's wakeups: in live.py, with them)."""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from services.projections.replay import Replayer


def from_state(path: str) -> Callable[[Request], Awaitable[Any]]:
    read = operator.attrgetter(path)

    async def dependency(request: Request) -> Any:  # async: a plain function would run in a worker thread
        return read(request.app.state)

    return dependency


PoolDep = Annotated[AsyncConnectionPool, Depends(from_state("runtime.pool"))]
JetStreamDep = Annotated[JetStreamContext, Depends(from_state("runtime.js"))]
ReplayerDep = Annotated[Replayer, Depends(from_state("replayer"))]
