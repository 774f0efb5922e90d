"""A NATS restart loses nothing: a publish made during the outage is retried with the same message id
until the server is back, and is stored exactly once."""

from __future__ import annotations

import asyncio

from shared import bus
from shared.contracts import Envelope
from shared.contracts.identity import UserReactivated
from shared.testing.nats import EmbeddedNats
from shared.testing.waiting import eventually
from tests.integration.conftest import stream_messages


async def test_a_publish_during_a_nats_restart_lands_once_after_it(nats_server: EmbeddedNats) -> None:
    nc = await nats_server.connect("tests")
    js = nc.jetstream()
    await bus.ensure_streams(js)
    before = Envelope.wrap(UserReactivated(user_id="before"), user_id="before")
    during = Envelope.wrap(UserReactivated(user_id="during"), user_id="during")
    try:
        await bus.publish(js, before.type, before.to_bytes(), msg_id=str(before.id))
        nats_server.stop()

        async def reconnecting() -> bool:
            return nc.is_reconnecting

        await eventually(reconnecting, within=10, what="the client to notice the outage")
        publishing = asyncio.create_task(
            bus.publish(js, during.type, during.to_bytes(), msg_id=str(during.id), ack_timeout=1.0, attempts=30)
        )
        await asyncio.sleep(0.5)  # let at least one attempt time out against the dead server
        assert not publishing.done()
        nats_server.start()  # same port, same data dir: streams and messages survive

        ack = await asyncio.wait_for(publishing, 60)
        assert ack.stream == "IDENTITY"
        messages = await stream_messages(js, "IDENTITY")
        assert [Envelope.from_bytes(data).user_id for _, data, _ in messages] == ["before", "during"]
    finally:
        await nc.close()
