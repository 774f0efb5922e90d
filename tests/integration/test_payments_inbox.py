"""The Stripe event inbox against real PostgreSQL and the real Stripe SDK: while Stripe cannot be
reached an event stays due, is retried with backoff, and raises the alarm; nothing is half-applied."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from services.payments import store
from services.payments.application import Payments
from services.payments.commands import Checkout, ReceiveStripeEvent, TransactionQuery
from services.payments.gateway import StripeGateway, StripeUnavailableError
from services.payments.stripe_events import STUCK_AFTER_ATTEMPTS
from shared.outbox import OutboxRelay
from shared.testing.waiting import free_port
from tests.integration.conftest import make_pool


@pytest.fixture
async def payments_pool(database_url: str, schema: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = await make_pool(database_url, schema, store.MIGRATIONS)
    yield pool
    await pool.close()


def unreachable_stripe() -> StripeGateway:
    # The real SDK, against a port where nothing listens: what an outage looks like from here.
    return StripeGateway("sk_test_nobody", f"http://127.0.0.1:{free_port()}")


async def outbox_rows(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) FROM outbox")).fetchone()
    return int(row[0]) if row else 0


async def test_an_event_stripe_cannot_be_asked_about_stays_due_and_raises_the_alarm(
    payments_pool: AsyncConnectionPool, js: JetStreamContext
) -> None:
    payments = Payments(payments_pool, OutboxRelay(payments_pool, js), unreachable_stripe())
    delivery = ReceiveStripeEvent(event_id="evt_outage1", kind="payment_intent.succeeded", object_id="pi_outage1")
    assert await payments.handle(delivery) is True
    assert await payments.handle(delivery) is False

    worker = payments.stripe_events
    for attempt in range(1, STUCK_AFTER_ATTEMPTS + 1):
        assert await worker.stuck_events_problem() is None
        assert await worker.process_one_event() is True
        async with payments_pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT attempts, processed_at, next_attempt_at > now(), outcome FROM stripe_events"
                    " WHERE id = 'evt_outage1'"
                )
            ).fetchone()
            assert row is not None
            attempts, processed_at, backing_off, outcome = row
            assert (attempts, processed_at, backing_off) == (attempt, None, True)
            assert outcome.startswith("Stripe:")
            assert await worker.process_one_event() is False  # not due again yet
            await conn.execute("UPDATE stripe_events SET next_attempt_at = now()")  # let time pass

    problem = await worker.stuck_events_problem()
    assert problem is not None and problem.startswith(f"1 Stripe event(s) not applied after {STUCK_AFTER_ATTEMPTS}")
    assert "evt_outage1" in problem
    assert await outbox_rows(payments_pool) == 0


async def test_a_checkout_stripe_cannot_answer_keeps_one_pending_transaction_for_its_retries(
    payments_pool: AsyncConnectionPool, js: JetStreamContext
) -> None:
    payments = Payments(payments_pool, OutboxRelay(payments_pool, js), unreachable_stripe())
    user, key = str(uuid.uuid4()), "checkout-1"
    with pytest.raises(StripeUnavailableError):
        await payments.handle(Checkout(user_id=user, package_id="basic", key=key))
    with pytest.raises(StripeUnavailableError):
        await payments.handle(Checkout(user_id=user, package_id="basic", key=key))
    (tx,) = await payments.transactions(TransactionQuery(user), None, 10)
    assert (tx.status, tx.stripe_payment_intent_id, tx.amount_cents, tx.credits) == ("PENDING", None, 999, 50)
    assert await outbox_rows(payments_pool) == 0
