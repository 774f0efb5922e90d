"""What the routes take from the running service: its database pool and its JetStream context."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool


async def get_pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.runtime.pool


async def get_jetstream(request: Request) -> JetStreamContext:
    return request.app.state.runtime.js


PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
JetStreamDep = Annotated[JetStreamContext, Depends(get_jetstream)]
