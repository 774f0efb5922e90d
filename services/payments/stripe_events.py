"""What Stripe says, taken in and applied: webhook deliveries into the Stripe event inbox and its worker,
reconciliation (what Stripe has that no delivery brought), and how a PaymentIntent's, an invoice's or a
subscription's state is applied (refunds and auto-recharge apply Stripe's answers here too).

A webhook delivery only queues its event; the worker reads the object the event names back
from Stripe and applies what it is now, its processed mark in the same transaction, so a crash leaves it due.
A transaction moves only on what Stripe says its PaymentIntent is (domain.observe), and every move is written
with the events it announces (events.py), so however many paths observe the same payment (webhooks, their
redeliveries, a refund's answer, reconciliation) each outcome reaches the stream once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.payments import billing_store, events, store
from services.payments.commands import ReceiveStripeEvent, Reconcile, Reconciliation, Repair
from services.payments.domain import (
    LIVE,
    Change,
    InvoiceState,
    NotYetError,
    PaymentState,
    SubscriptionState,
    SubscriptionStatus,
    invoice_transaction,
    observe,
)
from services.payments.gateway import NotAtStripeError, StripeGateway, StripeUnavailableError, configured
from services.payments.stripe_objects import StripePayloadError, parse_event
from shared import outbox, webhooks
from shared.credits import PLANS
from shared.inputs import is_uuid
from shared.outbox import OutboxRelay

log = logging.getLogger(__name__)
# About 30 s of retries (1 + 2 + 4 + 8 + 16): past a blip, a person should look.
STUCK_AFTER_ATTEMPTS = 5
RECONCILED_BY_DEFAULT = timedelta(days=1)  # how far back a reconciliation looks unless told


class StripeEvents:
    def __init__(self, pool: AsyncConnectionPool, relay: OutboxRelay, gateway: StripeGateway | None) -> None:
        self._pool = pool
        self._relay = relay
        self._gateway = gateway
        self._waiting = asyncio.Event()  # set when a delivery is queued

    async def receive(self, command: ReceiveStripeEvent) -> bool:
        """Take a verified webhook delivery into the inbox; False when it came before. The worker applies it."""
        event_id, kind, object_id = command.event_id, command.kind, command.object_id
        new = await webhooks.apply_once(
            self._pool,
            store.STRIPE_DELIVERIES,
            event_id,
            lambda conn: store.queue_event(conn, event_id, kind, object_id),
        )
        if new:
            self._waiting.set()
        return new

    async def reconcile(self, command: Reconcile) -> Reconciliation:
        """Every PaymentIntent Stripe lists since then, every one an event since then names (an event that
        never reached us is recorded as received), and every one we still hold open is read from Stripe
        and applied. Applying is idempotent, so a second run finds everything in place and changes nothing."""
        since = command.since or datetime.now(UTC) - RECONCILED_BY_DEFAULT
        gateway, report = configured(self._gateway), Reconciliation(since=since)
        intents = {i.id async for i in gateway.payment_intents() if i.created >= since.timestamp()}
        async for payload in gateway.events(int(since.timestamp())):
            report.events_listed += 1
            try:
                event = parse_event(payload)
            except StripePayloadError:
                continue
            named = event.object_id
            if named is None or not named.startswith("pi_"):
                # An invoice's or a subscription's: into the inbox like any delivery, for the worker.
                if await self.receive(ReceiveStripeEvent(event_id=event.id, kind=event.type, object_id=named)):
                    report.events_recovered.append(event.id)
                continue
            # A lost delivery of a payment's: recorded as received; its PaymentIntent is applied below.
            async with self._pool.connection() as conn, conn.transaction():
                lost = await store.receive_settled_event(
                    conn, event.id, event.type, named, "recovered by reconciliation"
                )
            if lost:
                report.events_recovered.append(event.id)
            intents.add(named)
        async with self._pool.connection() as conn:
            intents.update(await store.open_since(conn, since))
        for intent in sorted(intents):
            try:
                state = await gateway.payment_state(intent)
            except NotAtStripeError:
                report.unknown_intents.append(intent)
                continue
            async with self._pool.connection() as conn, conn.transaction():
                change = await observe_payment(conn, state)
            report.intents_checked += 1
            if change is None:
                report.unknown_intents.append(intent)
            elif change.refused:
                report.refused.append(f"{intent}: {change.refused}")
            elif change.changed:
                tx = change.transaction
                report.repaired.append(Repair(tx.id, intent, change.previous, tx.status, change.announced))
        if report.repaired:
            self._relay.wake()
        return report

    async def run(self) -> None:
        while True:
            while await self.process_one_event():
                pass
            self._waiting.clear()
            with contextlib.suppress(TimeoutError):  # retries come due with time too
                await asyncio.wait_for(self._waiting.wait(), timeout=1.0)

    async def process_one_event(self) -> bool:
        """Apply one due inbox event by reading what it names from Stripe; False when none is due.

        The event's processed mark and its effect commit together: a crash leaves the event due."""
        async with self._pool.connection() as conn:
            failure = None
            async with conn.transaction():
                claimed = await store.claim_due_event(conn)
                if claimed is None:
                    return False
                event_id, kind, object_id = claimed
                try:
                    outcome = await self._apply(conn, object_id) if object_id else f"ignored: nothing to do on {kind}"
                    await store.event_processed(conn, event_id, outcome)
                except (StripeUnavailableError, NotYetError) as exc:
                    failure = str(exc)
            if failure is not None:
                async with conn.transaction():
                    await store.event_failed(conn, event_id, failure)
                log.warning("Stripe event %s: %s; will retry", event_id, failure)
        self._relay.wake()
        return True

    async def stuck_events_problem(self) -> str | None:
        """The alarm while Stripe events keep failing to apply (Stripe unreachable, a key revoked)."""
        async with self._pool.connection() as conn:
            count, oldest = await store.stuck_events(conn, attempts=STUCK_AFTER_ATTEMPTS)
        return f"{count} Stripe event(s) not applied after {STUCK_AFTER_ATTEMPTS} tries; {oldest}" if count else None

    async def _apply(self, conn: AsyncConnection, object_id: str) -> str:
        """Read the object from Stripe and apply what it is now; what happened, for the inbox's record."""
        gateway = configured(self._gateway)
        try:
            if object_id.startswith("in_"):
                return await observe_invoice(conn, gateway, await gateway.invoice(object_id))
            if object_id.startswith("sub_"):
                return await observe_subscription(conn, await gateway.subscription(object_id))
            return _outcome(await observe_payment(conn, await gateway.payment_state(object_id)))
        except NotAtStripeError:
            return f"ignored: Stripe has no {object_id}"


async def observe_payment(conn: AsyncConnection, state: PaymentState) -> Change | None:
    """Apply Stripe's state to its transaction; None when the PaymentIntent is none of ours."""
    named = state.transaction_id
    tx = await store.get(conn, named, lock=True) if named and is_uuid(named) else None
    tx = tx or await store.by_payment_intent(conn, state.payment_intent_id, lock=True)
    if tx is None:
        return None
    change = observe(tx, state, datetime.now(UTC))
    if change.refused:
        log.error("transaction %s: %s", tx.id, change.refused)
    await record(conn, change)
    return change


async def record(conn: AsyncConnection, change: Change) -> None:
    """Write a transaction's move and the outcomes it announces, in the caller's transaction."""
    if change.changed:
        await store.save(conn, change.transaction)
        for status in change.announced:
            await outbox.add(conn, events.payment(change.transaction, status))


async def observe_invoice(conn: AsyncConnection, gateway: StripeGateway, invoice: InvoiceState) -> str:
    """Apply an invoice as Stripe has it now; what it did, for the inbox's outcome."""
    sub = (
        await billing_store.subscription_by_stripe_id(conn, invoice.subscription_id)
        if invoice.subscription_id
        else None
    )
    if sub is None:
        if invoice.subscription_id and (await gateway.subscription(invoice.subscription_id)).ours:
            # Stripe can report the first invoice before the subscribe that caused it has committed.
            raise NotYetError(f"subscription {invoice.subscription_id} is not recorded yet")
        return f"ignored: invoice {invoice.id} is of no subscription of ours"
    plan = PLANS[sub.plan_id]
    now = datetime.now(UTC)
    if invoice.status == "paid":
        tx = invoice_transaction(sub, plan, invoice, now)
        if not await store.insert(conn, tx, invoice.id):
            return f"no change: invoice {invoice.id} was recorded"
        await outbox.add(conn, events.renewed(sub, plan, invoice, tx))
        if sub.is_latest(invoice.period_end):
            await billing_store.save_subscription(conn, sub.renewed_by(invoice, now))
        return f"renewed {sub.id}: {plan.credits} credits until {invoice.period_end.isoformat()}"
    if invoice.status == "open" and invoice.attempted and sub.is_latest(invoice.period_end) and sub.status in LIVE:
        if sub.status is SubscriptionStatus.PAST_DUE:
            return f"no change: {sub.id} is past due"
        await billing_store.save_subscription(conn, replace(sub, status=SubscriptionStatus.PAST_DUE, updated_at=now))
        await outbox.add(conn, events.past_due(sub, invoice))
        return f"{sub.id} past due: invoice {invoice.id} failed"
    return f"no change: invoice {invoice.id} is {invoice.status}"


async def observe_subscription(conn: AsyncConnection, state: SubscriptionState) -> str:
    sub = await billing_store.subscription_by_stripe_id(conn, state.id)
    if sub is None:
        if state.ours:
            raise NotYetError(f"subscription {state.id} is not recorded yet")
        return f"ignored: subscription {state.id} is none of ours"
    moved = sub.following(state, datetime.now(UTC))
    if moved == sub:
        return f"no change: {sub.id} is {sub.status}"
    await billing_store.save_subscription(conn, moved)
    if moved.status is SubscriptionStatus.CANCELLED and sub.status is not SubscriptionStatus.CANCELLED:
        await outbox.add(conn, events.cancelled(sub))
    return f"{sub.id} is {moved.status}"


def _outcome(change: Change | None) -> str:
    if change is None:
        return "ignored: not a PaymentIntent of ours"
    if change.refused:
        return f"refused: {change.refused}"
    if not change.changed:
        return f"no change ({change.transaction.status})"
    return f"{change.transaction.id} → {change.transaction.status}"
