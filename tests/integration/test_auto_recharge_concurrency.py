"""Auto-recharge with two payments processes and redelivery, on real PostgreSQL, NATS and localstripe:
one crossing, delivered to both at once and then again, buys one pack."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from services.payments import billing_store, handlers, store
from services.payments.application import Payments
from services.payments.commands import TransactionQuery
from services.payments.domain import AutoRecharge
from services.payments.gateway import StripeGateway
from shared.contracts import Envelope
from shared.contracts import ledger as lc
from shared.outbox import OutboxRelay
from shared.testing.localstripe_server import LocalStripe
from tests.integration.conftest import make_pool


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    server = LocalStripe().start()
    yield server
    server.stop()


@pytest.fixture
async def two_pools(database_url: str, schema: str) -> AsyncIterator[tuple[AsyncConnectionPool, AsyncConnectionPool]]:
    first = await make_pool(database_url, schema, store.MIGRATIONS)
    second = await make_pool(database_url, schema)
    yield first, second
    await first.close()
    await second.close()


def crossing(user_id: str) -> Envelope:
    low = lc.BalanceLow(
        user_id=user_id, available=4, threshold=5, recharge_threshold=5, idempotency_key="client:d", cause_id=None
    )
    return Envelope.wrap(low, user_id=user_id)


async def test_one_crossing_seen_by_two_processes_and_redelivered_buys_once(
    two_pools: tuple[AsyncConnectionPool, AsyncConnectionPool], js: JetStreamContext, localstripe: LocalStripe
) -> None:
    gateway = StripeGateway("sk_test_recharge", localstripe.api_base)
    processes = [Payments(pool, OutboxRelay(pool, js), gateway) for pool in two_pools]
    user = str(uuid.uuid4())
    customer = await gateway.create_customer(user)
    method = await gateway._client.v1.payment_methods.create_async(  # what Stripe.js does in the browser
        {"type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
    )
    await gateway.save_card(customer, method.id)
    async with two_pools[0].connection() as conn, conn.transaction():
        await billing_store.add_customer(conn, user, customer)
        setting = AutoRecharge(user, True, 5, "basic", 5000, None, datetime.now(UTC))
        await billing_store.save_auto_recharge(conn, setting)

    event = crossing(user)
    await asyncio.gather(*(handlers.handle(payments, event) for payments in processes * 2))
    await handlers.handle(processes[1], event)  # redelivered later

    (tx,) = await processes[0].transactions(TransactionQuery(user), None, 10)
    assert (tx.status, tx.credits, tx.amount_cents) == ("COMPLETED", 50, 999)
    listed = await gateway._client.v1.payment_intents.list_async({"limit": 100})
    ours = [i for i in listed.data if i.to_dict()["metadata"].get("transaction_id") == tx.id]
    assert [i.status for i in ours] == ["succeeded"]
    async with two_pools[0].connection() as conn:
        outbox = await (await conn.execute("SELECT subject FROM outbox ORDER BY position")).fetchall()
    assert [row[0] for row in outbox] == ["payments.payment.succeeded", "payments.autorecharge.succeeded"]
