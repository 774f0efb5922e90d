"""Payments' use cases: each writes its state and its events in one transaction.

A transaction moves only on what Stripe says its PaymentIntent is (domain.observe); every move
and the events it announces are written together, with event ids derived from the transaction and
the outcome, so however many paths observe the same payment (webhooks, their redeliveries, a
refund's answer, reconciliation) each outcome reaches the stream once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.payments import store
from services.payments.domain import (
    Change,
    Kind,
    NotAtStripeError,
    NotRefundableError,
    NotYetError,
    PaymentState,
    Status,
    StripeUnavailableError,
    Transaction,
    TransactionNotFoundError,
    UnknownPackageError,
    observe,
)
from services.payments.gateway import StripeGateway
from services.payments.stripe_objects import StripePayloadError, parse_event
from services.payments.subscriptions import Billing
from shared import idempotency, outbox, webhooks
from shared.contracts import Envelope, EventData, derive_id
from shared.contracts import payments as pc
from shared.credits import PACKAGES
from shared.idempotency import IdempotencyConflictError, fingerprint
from shared.inputs import is_uuid
from shared.outbox import OutboxRelay

log = logging.getLogger(__name__)
# About 30 s of retries (1 + 2 + 4 + 8 + 16): past a blip, a person should look.
STUCK_AFTER_ATTEMPTS = 5


@dataclass(frozen=True)
class Repair:
    transaction_id: str
    payment_intent_id: str
    before: Status
    after: Status
    announced: tuple[Status, ...]


@dataclass
class Reconciliation:
    since: datetime
    events_listed: int = 0
    events_recovered: list[str] = field(default_factory=list)  # sent by Stripe, never received
    intents_checked: int = 0
    repaired: list[Repair] = field(default_factory=list)
    unknown_intents: list[str] = field(default_factory=list)  # at Stripe, naming no transaction of ours
    refused: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Checkout:
    transaction: Transaction
    client_secret: str


class Payments:
    def __init__(self, pool: AsyncConnectionPool, relay: OutboxRelay, gateway: StripeGateway | None) -> None:
        self._pool = pool
        self._relay = relay
        self.billing = Billing(pool, relay, gateway)
        self.events_waiting = asyncio.Event()

    @property
    def gateway(self) -> StripeGateway:
        return self.billing.gateway  # one check of Stripe's configuration for both

    # -- buying -----------------------------------------------------------------------------------

    async def checkout(self, user_id: str, package_id: str, key: str, correlation_id: str | None) -> Checkout:
        """A PENDING purchase and its PaymentIntent; a retry under `key` gets the same two back."""
        package = PACKAGES.get(package_id)
        if package is None:
            raise UnknownPackageError(package_id)
        gateway = self.gateway
        now = datetime.now(UTC)
        tx = Transaction(
            id=str(uuid.uuid4()), user_id=user_id, kind=Kind.CREDIT_PURCHASE, status=Status.PENDING,
            amount_cents=package.price_cents, currency=package.currency, credits=package.credits,
            description=f"{package.name}: {package.credits} credits", package_id=package.id,
            stripe_payment_intent_id=None, metadata={"correlation_id": correlation_id} if correlation_id else {},
            created_at=now, updated_at=now,
        )  # fmt: skip
        async with self._pool.connection() as conn, conn.transaction():
            tx_id = await idempotency.claim(conn, f"checkout:{user_id}", key, fingerprint(package.id), tx.id)
            if tx_id == tx.id:
                await store.insert(conn, tx)
        # The row lock makes concurrent retries wait for the one that creates the PaymentIntent.
        async with self._pool.connection() as conn, conn.transaction():
            current = await store.get(conn, tx_id, lock=True)
            assert current is not None, "claimed with its key"
            if current.stripe_payment_intent_id is None:
                intent, secret = await gateway.create_payment_intent(current)
                current = replace(current, stripe_payment_intent_id=intent)
                await store.save(conn, current)
                return Checkout(current, secret)
        return Checkout(current, await gateway.client_secret(intent_of(current)))

    # -- what Stripe says -------------------------------------------------------------------------

    async def receive(self, event_id: str, kind: str, object_id: str | None) -> bool:
        """Take a verified webhook delivery into the inbox; False when it came before. The worker applies it."""
        new = await webhooks.apply_once(
            self._pool,
            store.STRIPE_DELIVERIES,
            event_id,
            lambda conn: store.queue_event(conn, event_id, kind, object_id),
        )
        if new:
            self.events_waiting.set()
        return new

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

    async def _apply(self, conn: AsyncConnection, object_id: str) -> str:
        """Read the object from Stripe and apply what it is now; what happened, for the inbox's record."""
        gateway = self.gateway
        try:
            if object_id.startswith("in_"):
                return await self.billing.observe_invoice(conn, await gateway.invoice(object_id))
            if object_id.startswith("sub_"):
                return await self.billing.observe_subscription(conn, await gateway.subscription(object_id))
            return _outcome(await self._observe(conn, await gateway.payment_state(object_id)))
        except NotAtStripeError:
            return f"ignored: Stripe has no {object_id}"

    async def stuck_events_problem(self) -> str | None:
        """The alarm while Stripe events keep failing to apply (Stripe unreachable, a key revoked)."""
        async with self._pool.connection() as conn:
            count, oldest = await store.stuck_events(conn, attempts=STUCK_AFTER_ATTEMPTS)
        return f"{count} Stripe event(s) not applied after {STUCK_AFTER_ATTEMPTS} tries; {oldest}" if count else None

    async def run_event_worker(self) -> None:
        while True:
            while await self.process_one_event():
                pass
            self.events_waiting.clear()
            with contextlib.suppress(TimeoutError):  # retries come due with time too
                await asyncio.wait_for(self.events_waiting.wait(), timeout=1.0)

    async def reconcile(self, since: datetime) -> Reconciliation:
        """Compare Stripe with our transactions since `since` and repair what a missed webhook left.

        Every PaymentIntent Stripe lists since then, every one an event since then names (an event that
        never reached us is recorded as received), and every one we still hold open is read from Stripe
        and applied. Applying is idempotent, so a second run finds everything in place and changes nothing."""
        gateway, report = self.gateway, Reconciliation(since=since)
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
                if await self.receive(event.id, event.type, named):
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
                change = await self._observe(conn, state)
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

    async def observe_in(self, conn: AsyncConnection, state: PaymentState) -> Change | None:
        """Apply Stripe's state inside the caller's transaction (an off-session purchase's answer)."""
        return await self._observe(conn, state)

    async def _observe(self, conn: AsyncConnection, state: PaymentState) -> Change | None:
        """Apply Stripe's state to its transaction; None when the PaymentIntent is none of ours."""
        named = state.transaction_id
        tx = await store.get(conn, named, lock=True) if named and is_uuid(named) else None
        tx = tx or await store.by_payment_intent(conn, state.payment_intent_id, lock=True)
        if tx is None:
            return None
        change = observe(tx, state, datetime.now(UTC))
        if change.refused:
            log.error("transaction %s: %s", tx.id, change.refused)
        if change.changed:
            await store.save(conn, change.transaction)
            for status in change.announced:
                await announce(conn, change.transaction, status)
        return change

    # -- refunds ----------------------------------------------------------------------------------

    async def refund(self, tx_id: str, reason: str, amount_cents: int | None, key: str, admin_id: str) -> Transaction:
        """Refund at Stripe and record Stripe's answer; a retry under `key` answers the same."""
        meaning = fingerprint(tx_id, reason, amount_cents)
        gateway = self.gateway
        async with self._pool.connection() as conn, conn.transaction():
            if await idempotency.claim(conn, "refund", key, meaning, tx_id) != tx_id:
                raise IdempotencyConflictError(key)
            tx = await store.get(conn, tx_id, lock=True)
            if tx is None:
                raise TransactionNotFoundError(tx_id)
            replay = await _replayed(conn, key, tx)
            if replay:
                return tx
            if tx.status is not Status.COMPLETED:
                raise NotRefundableError(f"transaction {tx_id} is {tx.status}, only a COMPLETED payment is refunded")
            amount = tx.amount_cents if amount_cents is None else amount_cents
            if not 0 < amount <= tx.amount_cents:
                raise NotRefundableError(f"a refund is 1 to {tx.amount_cents} cents, not {amount}")
            state = await gateway.refund(tx, amount, reason)
            change = observe(tx, state, datetime.now(UTC), reason=reason)
            if change.transaction.status is not Status.REFUNDED:
                raise StripeUnavailableError(f"Stripe did not record the refund (the payment is {state.status})")
            refunded = change.transaction
            refunded.metadata["refund"].update(admin_id=admin_id, idempotency_key=key)
            await store.save(conn, refunded)
            for status in change.announced:
                await announce(conn, refunded, status)
        self._relay.wake()
        return refunded

    # -- reading ----------------------------------------------------------------------------------

    async def transaction(self, tx_id: str) -> Transaction:
        async with self._pool.connection() as conn:
            tx = await store.get(conn, tx_id)
        if tx is None:
            raise TransactionNotFoundError(tx_id)
        return tx

    async def transactions(
        self,
        user_id: str | None,
        statuses: list[Status],
        kinds: list[Kind],
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Transaction]:
        async with self._pool.connection() as conn:
            return await store.page(conn, user_id, statuses, kinds, after, limit)

    async def totals(self, user_id: str) -> list[dict[str, Any]]:
        async with self._pool.connection() as conn:
            return await store.totals_by_status(conn, user_id)


async def _replayed(conn: AsyncConnection, key: str, tx: Transaction) -> bool:
    """Whether this refund key already refunded `tx` (its retry answers with the refunded transaction)."""
    return tx.status is Status.REFUNDED and tx.metadata.get("refund", {}).get("idempotency_key") == key


def intent_of(tx: Transaction) -> str:
    assert tx.stripe_payment_intent_id, "the checkout stored it"
    return tx.stripe_payment_intent_id


def _outcome(change: Change | None) -> str:
    if change is None:
        return "ignored: not a PaymentIntent of ours"
    if change.refused:
        return f"refused: {change.refused}"
    if not change.changed:
        return f"no change ({change.transaction.status})"
    return f"{change.transaction.id} → {change.transaction.status}"


def _event_for(tx: Transaction, status: Status) -> EventData:
    common = {
        "transaction_id": tx.id,
        "user_id": tx.user_id,
        "currency": tx.currency,
        "stripe_payment_intent_id": tx.stripe_payment_intent_id,
    }
    match status:
        case Status.COMPLETED:
            return pc.PaymentSucceeded(**common, credits=tx.credits, amount_cents=tx.amount_cents,
                                       package_id=tx.package_id)  # fmt: skip
        case Status.FAILED:
            return pc.PaymentFailed(**common, credits=tx.credits, amount_cents=tx.amount_cents,
                                    reason=tx.metadata.get("failure"))  # fmt: skip
        case Status.CANCELLED:
            return pc.PaymentCancelled(**common, credits=tx.credits, amount_cents=tx.amount_cents)
        case Status.REFUNDED:
            return pc.PaymentRefunded(**common, credits=tx.credits_clawed_back, amount_cents=tx.refunded_cents,
                                      stripe_charge_id=tx.metadata["refund"].get("charge_id"))  # fmt: skip
    raise ValueError(f"nothing is announced for {status}")


async def announce(conn: AsyncConnection, tx: Transaction, status: Status) -> None:
    # One id per transaction and outcome: a second path to the same outcome is a duplicate everywhere.
    event_id = derive_id("payments", tx.id, status)
    correlation = tx.metadata.get("correlation_id") or f"transaction:{tx.id}"
    envelope = Envelope.wrap(_event_for(tx, status), user_id=tx.user_id, correlation_id=correlation, event_id=event_id)
    await outbox.add(conn, envelope)
