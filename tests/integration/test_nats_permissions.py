"""The bus as a trust boundary, against a real nats-server with the users of shared/bus/users.py: each
service's login may publish only its own events, reach only its own consumers, subscribe only to its own
replies and what it serves; stream management is ops' alone. Every refusal is the server's, seen on the
connection's error callback (`bus.refusals`), and leaves the streams as they were."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError

from services.ledger.handlers import SUBSCRIBED
from services.media.handlers import DURABLE as MEDIA_LEDGER
from services.projections.projection import CONSUMERS
from shared import bus
from shared.bus.users import LEDGER_RPC, OPS, SERVICE_USERS, USERS, inbox_prefix
from shared.contracts import Envelope
from shared.contracts.payments import PaymentSucceeded
from shared.testing.nats import EmbeddedNats

# A subject of each stream, and the one user that owns it (the media worker relays media's too).
OWNED = {
    "identity.user.registered": {"identity"},
    "ledger.credits.granted": {"ledger"},
    "payments.payment.succeeded": {"payments"},
    "media.job.requested": {"media", "media-worker"},
    "mediawork.job.queued": {"media", "media-worker"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    nats_server = EmbeddedNats(tmp_path_factory.mktemp("permissions") / "nats").start()
    nats_server.create_streams()
    yield nats_server
    nats_server.stop()


async def as_user(server: EmbeddedNats, user: str, act: Callable[[Client], Awaitable[object]]) -> int:
    """Run `act` on a connection of `user`; how many operations the server refused it."""
    nc = await server.connect(user)
    try:
        await act(nc)
        await nc.flush()
        await asyncio.sleep(0.1)  # a refused subscription is reported a moment after the flush
        return bus.refusals(nc).count
    finally:
        await nc.close()


@pytest.fixture(scope="module")
async def ops(server: EmbeddedNats) -> AsyncIterator[Client]:
    nc = await server.connect(OPS)
    yield nc
    await nc.close()


async def stream_size(ops: Client, stream: str) -> int:
    return int((await ops.jetstream().stream_info(stream)).state.messages)


async def test_an_anonymous_connection_is_refused(server: EmbeddedNats) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0)


async def test_a_wrong_password_is_refused(server: EmbeddedNats) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(server.url, user="ledger", password="guessed", allow_reconnect=False)


@pytest.mark.parametrize("subject", list(OWNED))
async def test_only_its_owner_may_publish_an_event(server: EmbeddedNats, ops: Client, subject: str) -> None:
    stream = bus.streams.stream_of(subject)
    for user in USERS:
        before = await stream_size(ops, stream)
        event = Envelope.wrap(
            PaymentSucceeded(
                transaction_id=str(uuid.uuid4()), user_id="victim", credits=1_000_000, amount_cents=0,
                currency="usd", stripe_payment_intent_id=None,
            ),
            user_id="victim",
        )  # fmt: skip

        async def publish(nc: Client, event: Envelope = event) -> None:
            with contextlib.suppress(nats.errors.TimeoutError):  # a refused publish is dropped: no ack comes
                await nc.jetstream().publish(subject, event.to_bytes(), timeout=0.5)

        refused = await as_user(server, user, publish)
        stored = await stream_size(ops, stream) - before
        if user in OWNED[subject]:
            assert (refused, stored) == (0, 1), user
        else:
            assert (refused, stored) == (1, 0), f"{user} published {subject}"


async def test_only_the_ledger_serves_its_rpc_and_only_media_asks_it(server: EmbeddedNats) -> None:
    """The media worker may ask any of it; the media API only for a balance (before it reads an upload)."""

    async def serve(nc: Client) -> None:
        await nc.subscribe(LEDGER_RPC, queue="ledger-rpc")

    for user in USERS:
        assert await as_user(server, user, serve) == (0 if user == "ledger" else 1), user

    async def answer(nc: Client) -> None:
        async def reply(msg: Msg) -> None:
            await msg.respond(b'{"ok": true}')

        await nc.subscribe("ledger.rpc.balance", queue="ledger-rpc", cb=reply)
        await nc.subscribe("ledger.rpc.debit", queue="ledger-rpc", cb=reply)

    ledger = await server.connect("ledger")
    try:
        await answer(ledger)
        await ledger.flush()
        allowed = {"balance": {"media-worker", "media"}, "debit": {"media-worker"}}
        for user in USERS:
            for operation, askers in allowed.items():
                caller = await server.connect(user)
                try:
                    try:
                        answered = (await caller.request(f"ledger.rpc.{operation}", b"{}", timeout=1)).data
                    except nats.errors.TimeoutError:
                        answered = b""
                    assert (answered, bus.refusals(caller).count) == (
                        (b'{"ok": true}', 0) if user in askers else (b"", 1)
                    ), (user, operation)
                finally:
                    await caller.close()
        assert bus.refusals(ledger).count == 0  # its answer went back under allow_responses
    finally:
        await ledger.close()


async def test_no_user_may_read_another_users_replies(server: EmbeddedNats) -> None:
    def listen(subject: str) -> Callable[[Client], Awaitable[object]]:
        async def subscribe(nc: Client) -> None:
            await nc.subscribe(subject)

        return subscribe

    for user in SERVICE_USERS:
        other = "ledger" if user != "ledger" else "payments"
        assert await as_user(server, user, listen(f"{inbox_prefix(user)}.>")) == 0
        assert await as_user(server, user, listen(f"{inbox_prefix(other)}.>")) == 1
        assert await as_user(server, user, listen("_INBOX.>")) == 1


@pytest.mark.parametrize("user", SERVICE_USERS)
async def test_no_service_may_delete_or_purge_a_stream(server: EmbeddedNats, ops: Client, user: str) -> None:
    async def delete(nc: Client) -> None:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream(timeout=1).delete_stream("PAYMENTS")

    async def purge(nc: Client) -> None:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream(timeout=1).purge_stream("LEDGER")

    async def create(nc: Client) -> None:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream(timeout=1).add_stream(StreamConfig(name="ROGUE", subjects=["payments.rogue"]))

    payments, ledger = await stream_size(ops, "PAYMENTS"), await stream_size(ops, "LEDGER")
    assert await as_user(server, user, delete) == 1
    assert await as_user(server, user, purge) == 1
    assert await as_user(server, user, create) == 1
    assert (await stream_size(ops, "PAYMENTS"), await stream_size(ops, "LEDGER")) == (payments, ledger)
    assert "ROGUE" not in {s.config.name for s in await ops.jetstream().streams_info()}


async def test_ops_may_delete_a_stream(server: EmbeddedNats) -> None:
    ops = await server.connect(OPS)
    try:
        js = ops.jetstream()
        await js.add_stream(StreamConfig(name="SCRATCH", subjects=["scratch.>"]))
        assert await js.delete_stream("SCRATCH")
        with pytest.raises(NotFoundError):
            await js.stream_info("SCRATCH")
        assert bus.refusals(ops).count == 0
    finally:
        await ops.close()


async def test_a_service_may_not_rewrite_another_services_consumer(server: EmbeddedNats) -> None:
    """The unnamed CONSUMER.CREATE updates whatever consumer its body names; a service holds only the named
    form for its own durables, so the ledger's consumer of purchases keeps its filter."""
    ops = await server.connect(OPS)
    try:
        config = ConsumerConfig(
            name="ledger-payments", durable_name="ledger-payments", ack_policy=AckPolicy.EXPLICIT,
            filter_subjects=["payments.>"],
        )  # fmt: skip
        await ops.jetstream().add_consumer("PAYMENTS", config)
    finally:
        await ops.close()
    hijack = json.dumps(
        {"stream_name": "PAYMENTS", "config": {"name": "ledger-payments", "filter_subject": "payments.nothing"}}
    ).encode()

    async def rewrite(nc: Client) -> None:
        for subject in ("$JS.API.CONSUMER.CREATE.PAYMENTS", "$JS.API.CONSUMER.CREATE.PAYMENTS.ledger-payments"):
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(subject, hijack, timeout=1)

    assert await as_user(server, "projections", rewrite) == 2
    ops = await server.connect(OPS)
    try:
        info = await ops.jetstream().consumer_info("PAYMENTS", "ledger-payments")
        assert info.config.filter_subjects == ["payments.>"] or info.config.filter_subject == "payments.>"
    finally:
        await ops.close()


async def test_a_service_consumes_only_through_its_own_durables(server: EmbeddedNats) -> None:
    async def bind(nc: Client, durable: str) -> None:
        config = ConsumerConfig(name=durable, durable_name=durable, ack_policy=AckPolicy.EXPLICIT)
        await nc.jetstream(timeout=2).add_consumer("LEDGER", config)

    async def own(nc: Client) -> None:
        await bind(nc, "payments-ledger")

    assert await as_user(server, "payments", own) == 0

    async def foreign(nc: Client) -> None:
        with pytest.raises(nats.errors.TimeoutError):
            await bind(nc, "projections-ledger")

    assert await as_user(server, "payments", foreign) == 1


async def test_only_ops_may_redrive_dead_letters(server: EmbeddedNats) -> None:
    async def redrive(nc: Client) -> None:
        await nc.publish("creditstream.redrive.ledger-payments", b'{"seq": 1}')

    for user in USERS:
        assert await as_user(server, user, redrive) == (0 if user == OPS else 1), user


def test_the_table_names_every_consumer_the_services_run() -> None:
    """A consumer missing from shared/bus/users.py would be refused at start: the table and the code agree."""
    running = {
        "ledger": {(stream, f"ledger-{stream.lower()}") for stream in SUBSCRIBED},
        "payments": {("LEDGER", "payments-ledger")},
        "media": {("LEDGER", MEDIA_LEDGER)},
        "media-worker": {("MEDIAWORK", "media-worker")},
        "projections": set(CONSUMERS),
        "identity": set(),
    }
    for user, durables in running.items():
        access = {("IDENTITY", f"{user}-access")} if user != "media-worker" else set()
        assert set(USERS[user].consumes) == durables | access, user


async def test_a_service_started_with_its_login_reports_no_refusal(tmp_path: Path, server: EmbeddedNats) -> None:
    """What every service does at start (its streams' info, its consumers, JetStream's account info),
    as its own user: nothing refused."""
    for user in SERVICE_USERS:
        nc = await server.connect(user)
        try:
            await bus.require_streams(nc.jetstream(), USERS[user].streams, within=5)
            await nc.jetstream().account_info()
            await nc.flush()
            assert bus.refusals(nc).count == 0, (user, bus.refusals(nc).last)
        finally:
            await nc.close()
