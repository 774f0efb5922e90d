"""The deactivated-users list every service keeps, fed from a real IDENTITY stream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable

from shared import bus, db, migrations
from shared.access import AccessList
from shared.bus import Consumer
from shared.contracts import Envelope
from shared.contracts.identity import UserDeactivated, UserReactivated
from shared.testing.nats import EmbeddedNats
from shared.testing.waiting import eventually


async def test_the_list_follows_deactivation_and_reactivation_and_ignores_stale_redelivery(
    database_url: str, schema: str, nats_server: EmbeddedNats
) -> None:
    await migrations.apply(database_url, schema, (("shared", migrations.SHARED),))
    pool = await db.open_pool(database_url, schema)
    nc = await nats_server.connect("tests")
    js = nc.jetstream()
    await bus.ensure_streams(js)
    access = AccessList(pool, cache_seconds=0)
    task = asyncio.create_task(Consumer(js, access.subscription("test")).run())
    user = str(uuid.uuid4())
    try:
        assert not await access.is_deactivated(user)
        off = Envelope.wrap(UserDeactivated(user_id=user, reason="test"), user_id=user)
        ack = await bus.publish(js, off.type, off.to_bytes(), msg_id=str(off.id))
        await eventually(lambda: access.is_deactivated(user), within=20, what="refused")

        on = Envelope.wrap(UserReactivated(user_id=user), user_id=user)
        await bus.publish(js, on.type, on.to_bytes(), msg_id=str(on.id))
        await eventually(lambda: _negated(access.is_deactivated(user)), within=20, what="let back in")

        # The old deactivation delivered again (a replay, a redelivery) must not lock the user out.
        await access.apply(off, ack.seq)
        assert not await access.is_deactivated(user)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await nc.close()
        await pool.close()


async def _negated(check: Awaitable[bool]) -> bool:
    return not await check
