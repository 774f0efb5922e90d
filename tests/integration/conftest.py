"""Integration fixtures: a fresh schema in the session's real PostgreSQL and a JetStream context on
the test's own nats-server, with the streams created."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from shared import bus, db, migrations
from shared.migrations import Migration
from shared.testing.nats import EmbeddedNats


async def make_pool(database_url: str, schema: str, own: Sequence[Migration] = ()) -> AsyncConnectionPool:
    """A pool on `schema` with the tables every service has and a service's migrations `own`."""
    await migrations.apply(database_url, schema, (("shared", migrations.SHARED), ("service", own)))
    return await db.open_pool(database_url, schema)


@pytest.fixture
async def pool(database_url: str, schema: str) -> AsyncIterator[AsyncConnectionPool]:
    p = await make_pool(database_url, schema)
    yield p
    await p.close()


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    connection = await nats_server.connect("tests")
    yield connection
    await connection.close()


@pytest.fixture
async def js(nc: Client) -> JetStreamContext:
    context = nc.jetstream()
    await bus.ensure_streams(context)
    return context


async def stream_messages(js: JetStreamContext, stream: str) -> list[tuple[str, bytes, dict[str, str]]]:
    """Every message on `stream`, in order: (subject, data, headers)."""
    info = await js.stream_info(stream)
    out: list[tuple[str, bytes, dict[str, str]]] = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        msg = await js.get_msg(stream, seq=seq)
        out.append((msg.subject or "", msg.data or b"", dict(msg.headers or {})))
    return out


class FailingAfter:
    """Wraps the real JetStream context and fails publishes after `n` succeeded: a relay crash
    in the middle of a batch, after some messages reached the stream and before it could record that."""

    def __init__(self, js: JetStreamContext, n: int) -> None:
        self._js = js
        self._left = n

    async def publish(self, *args: object, **kwargs: object) -> object:
        self._die_when_done()
        return await self._js.publish(*args, **kwargs)  # type: ignore[arg-type]

    def _die_when_done(self) -> None:
        if self._left == 0:
            raise RuntimeError("relay process died here")
        self._left -= 1

    def __getattr__(self, name: str) -> object:
        return getattr(self._js, name)
