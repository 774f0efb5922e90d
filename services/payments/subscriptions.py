"""Saved cards and subscriptions: each change and its events in one transaction, like payments.

A subscription moves on what Stripe says its invoices and itself are, read back from Stripe when an
event names them. A paid invoice is recorded once (the transaction is keyed by the invoice) with
`payments.subscription.renewed`, so the ledger grants the period's credits once, expiring at the
period's end unless the plan rolls them over."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.payments import store
from services.payments.billing import (
    FROM_STRIPE,
    AlreadySubscribedError,
    AutoRecharge,
    Card,
    InvoiceState,
    NoCardError,
    Subscription,
    SubscriptionNotFoundError,
    SubscriptionState,
    SubscriptionStatus,
)
from services.payments.domain import (
    Kind,
    NotYetError,
    Status,
    StripeUnavailableError,
    Transaction,
)
from services.payments.gateway import StripeGateway
from shared import idempotency, outbox
from shared.contracts import Envelope, EventData, derive_id
from shared.contracts import payments as pc
from shared.credits import PLANS, SubscriptionPlan
from shared.idempotency import fingerprint
from shared.outbox import OutboxRelay

log = logging.getLogger(__name__)
LIVE = (SubscriptionStatus.INCOMPLETE, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE)


class Billing:
    def __init__(self, pool: AsyncConnectionPool, relay: OutboxRelay, gateway: StripeGateway | None) -> None:
        self._pool = pool
        self._relay = relay
        self._gateway = gateway

    @property
    def gateway(self) -> StripeGateway:
        if self._gateway is None:
            raise StripeUnavailableError("Stripe is not configured (STRIPE_SECRET_KEY)")
        return self._gateway

    # -- cards ----------------------------------------------------------------------------------

    async def save_card(self, user_id: str, payment_method: str) -> list[Card]:
        """Attach a card made client-side (Stripe.js) to the user's customer, as their default."""
        customer = await self._customer(user_id, create=True)
        assert customer is not None
        await self.gateway.save_card(customer, payment_method)
        return await self.gateway.cards(customer)

    async def cards(self, user_id: str) -> list[Card]:
        customer = await self._customer(user_id, create=False)
        return await self.gateway.cards(customer) if customer else []

    async def _customer(self, user_id: str, *, create: bool) -> str | None:
        async with self._pool.connection() as conn, conn.transaction():
            if (known := await store.customer_of(conn, user_id)) is not None or not create:
                return known
            await store.lock_customer(conn, user_id)
            if (known := await store.customer_of(conn, user_id)) is not None:
                return known
            customer = await self.gateway.create_customer(user_id)
            await store.add_customer(conn, user_id, customer)
            return customer

    # -- subscriptions --------------------------------------------------------------------------

    async def subscribe(self, user_id: str, plan_id: str, key: str) -> Subscription:
        """Subscribe the user to a plan, paid with their default card; a retry under `key` answers the same.

        The key's claim, the row and the Stripe call share one transaction: if Stripe fails nothing is
        kept, and the subscription's id (so Stripe's idempotency key) is derived from the key, so a
        retry after a crash asks Stripe for the same subscription."""
        plan = PLANS[plan_id]
        gateway = self.gateway
        sub_id = str(derive_id("subscription", user_id, key))
        async with self._pool.connection() as conn, conn.transaction():
            held_id = await idempotency.claim(conn, f"subscribe:{user_id}", key, fingerprint(plan.id), sub_id)
            if (existing := await store.subscription(conn, held_id)) is not None:
                return existing
            customer = await store.customer_of(conn, user_id)
            if customer is None or await gateway.default_card(customer) is None:
                raise NoCardError(user_id)
            now = datetime.now(UTC)
            sub = Subscription(
                sub_id, user_id, plan.id, SubscriptionStatus.INCOMPLETE, None, None, None, False, now, now
            )
            if not await store.insert_subscription(conn, sub):
                raise AlreadySubscribedError(user_id)
            state = await gateway.subscribe(customer, await gateway.ensure_plan(plan), sub)
            sub = _moved(replace(sub, stripe_subscription_id=state.id), state)
            await store.save_subscription(conn, sub)
        return sub

    async def cancel(self, user_id: str, sub_id: str) -> Subscription:
        """Cancel at the period's end: the credits of the paid period stay until they expire."""
        async with self._pool.connection() as conn, conn.transaction():
            sub = await store.subscription(conn, sub_id, lock=True)
            if sub is None or sub.user_id != user_id:
                raise SubscriptionNotFoundError(sub_id)
            if sub.status is SubscriptionStatus.CANCELLED or sub.cancel_at_period_end or not sub.stripe_subscription_id:
                return sub
            state = await self.gateway.cancel_at_period_end(sub.stripe_subscription_id)
            sub = _moved(sub, state)
            await store.save_subscription(conn, sub)
        return sub

    async def current(self, user_id: str) -> Subscription | None:
        async with self._pool.connection() as conn:
            return await store.current_subscription(conn, user_id)

    # -- what Stripe says -------------------------------------------------------------------------

    async def observe_invoice(self, conn: AsyncConnection, invoice: InvoiceState) -> str:
        """Apply an invoice as Stripe has it now; what it did, for the inbox's outcome."""
        sub = await store.subscription_by_stripe_id(conn, invoice.subscription_id) if invoice.subscription_id else None
        if sub is None:
            if invoice.subscription_id and (await self.gateway.subscription(invoice.subscription_id)).ours:
                # Stripe can report the first invoice before the subscribe that caused it has committed.
                raise NotYetError(f"subscription {invoice.subscription_id} is not recorded yet")
            return f"ignored: invoice {invoice.id} is of no subscription of ours"
        plan = PLANS[sub.plan_id]
        now = datetime.now(UTC)
        if invoice.status == "paid":
            tx = _invoice_transaction(sub, plan, invoice, now)
            if not await store.insert_invoice_transaction(conn, tx, invoice.id):
                return f"no change: invoice {invoice.id} was recorded"
            renewed = pc.SubscriptionRenewed(
                user_id=sub.user_id, subscription_id=sub.id, invoice_id=invoice.id, credits=plan.credits,
                amount_cents=invoice.amount_paid, currency=tx.currency, period_start=invoice.period_start,
                period_end=invoice.period_end, rolls_over=plan.rolls_over, plan_id=sub.plan_id, transaction_id=tx.id,
            )  # fmt: skip
            await _emit(conn, sub.user_id, renewed, derive_id("payments", "invoice", invoice.id, "paid"))
            if sub.current_period_end is None or invoice.period_end >= sub.current_period_end:
                await store.save_subscription(conn, _renewed(sub, invoice, now))
            return f"renewed {sub.id}: {plan.credits} credits until {invoice.period_end.isoformat()}"
        current = sub.current_period_end is None or invoice.period_end >= sub.current_period_end
        if invoice.status == "open" and invoice.attempted and current and sub.status in LIVE:
            if sub.status is SubscriptionStatus.PAST_DUE:
                return f"no change: {sub.id} is past due"
            await store.save_subscription(conn, replace(sub, status=SubscriptionStatus.PAST_DUE, updated_at=now))
            past_due = pc.SubscriptionPastDue(
                user_id=sub.user_id, subscription_id=sub.id, invoice_id=invoice.id, plan_id=sub.plan_id
            )
            await _emit(conn, sub.user_id, past_due, derive_id("payments", "invoice", invoice.id, "past_due"))
            return f"{sub.id} past due: invoice {invoice.id} failed"
        return f"no change: invoice {invoice.id} is {invoice.status}"

    async def observe_subscription(self, conn: AsyncConnection, state: SubscriptionState) -> str:
        sub = await store.subscription_by_stripe_id(conn, state.id)
        if sub is None:
            if state.ours:
                raise NotYetError(f"subscription {state.id} is not recorded yet")
            return f"ignored: subscription {state.id} is none of ours"
        moved = _moved(sub, state)
        if moved == sub:
            return f"no change: {sub.id} is {sub.status}"
        await store.save_subscription(conn, moved)
        if moved.status is SubscriptionStatus.CANCELLED and sub.status is not SubscriptionStatus.CANCELLED:
            cancelled = pc.SubscriptionCancelled(user_id=sub.user_id, subscription_id=sub.id, plan_id=sub.plan_id)
            await _emit(conn, sub.user_id, cancelled, derive_id("payments", "subscription", sub.id, "cancelled"))
        return f"{sub.id} is {moved.status}"

    # -- auto-recharge --------------------------------------------------------------------------

    async def set_auto_recharge(self, setting: AutoRecharge) -> AutoRecharge:
        """Save the user's auto-recharge; turning it on needs a saved default card."""
        if setting.enabled:
            customer = await self._customer(setting.user_id, create=False)
            if customer is None or await self.gateway.default_card(customer) is None:
                raise NoCardError(setting.user_id)
        async with self._pool.connection() as conn, conn.transaction():
            await save_setting(conn, setting)
        self._relay.wake()
        return setting

    async def auto_recharge(self, user_id: str) -> tuple[AutoRecharge | None, int]:
        """The user's setting and the cents it has spent this calendar month (UTC)."""
        month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        async with self._pool.connection() as conn:
            spent, _ = await store.recharged(conn, user_id, month)
            return await store.auto_recharge(conn, user_id), spent

    def wake(self) -> None:
        self._relay.wake()


def _moved(sub: Subscription, state: SubscriptionState) -> Subscription:
    """A subscription with Stripe's word on its status (cancelled is final; a live one only moves up
    from INCOMPLETE: invoices say ACTIVE or PAST_DUE), its period and its cancellation."""
    status = FROM_STRIPE.get(state.status, sub.status)
    if sub.status is SubscriptionStatus.CANCELLED:
        status = SubscriptionStatus.CANCELLED
    elif status is not SubscriptionStatus.CANCELLED and sub.status is not SubscriptionStatus.INCOMPLETE:
        status = sub.status
    later = sub.current_period_end is None or state.period_end >= sub.current_period_end
    return replace(
        sub,
        status=status,
        current_period_start=state.period_start if later else sub.current_period_start,
        current_period_end=state.period_end if later else sub.current_period_end,
        cancel_at_period_end=state.cancel_at_period_end or sub.cancel_at_period_end,
        updated_at=sub.updated_at if (status, state.cancel_at_period_end) == (sub.status, sub.cancel_at_period_end)
        else datetime.now(UTC),
    )  # fmt: skip


def _renewed(sub: Subscription, invoice: InvoiceState, now: datetime) -> Subscription:
    status = sub.status if sub.status is SubscriptionStatus.CANCELLED else SubscriptionStatus.ACTIVE
    return replace(
        sub, status=status, current_period_start=invoice.period_start, current_period_end=invoice.period_end,
        updated_at=now,
    )  # fmt: skip


def _invoice_transaction(
    sub: Subscription, plan: SubscriptionPlan, invoice: InvoiceState, now: datetime
) -> Transaction:
    return Transaction(
        id=str(derive_id("transaction", "invoice", invoice.id)), user_id=sub.user_id, kind=Kind.SUBSCRIPTION,
        status=Status.COMPLETED, amount_cents=invoice.amount_paid, currency=invoice.currency.upper() or plan.currency,
        credits=plan.credits, description=f"{plan.name} subscription: {plan.credits} credits", package_id=None,
        stripe_payment_intent_id=None,
        metadata={
            "subscription_id": sub.id, "plan_id": plan.id, "invoice_id": invoice.id,
            "period_start": invoice.period_start.isoformat(), "period_end": invoice.period_end.isoformat(),
        },
        created_at=now, updated_at=now,
    )  # fmt: skip


async def _emit(conn: AsyncConnection, user_id: str, body: EventData, event_id: uuid.UUID) -> None:
    await outbox.add(conn, Envelope.wrap(body, user_id=user_id, event_id=event_id))


async def save_setting(conn: AsyncConnection, setting: AutoRecharge) -> None:
    """Save a user's auto-recharge and tell the ledger where to watch their balance, in one transaction."""
    await store.save_auto_recharge(conn, setting)
    configured = pc.AutoRechargeConfigured(
        user_id=setting.user_id, threshold=setting.threshold if setting.enabled else None, at=setting.updated_at
    )
    await outbox.add(conn, Envelope.wrap(configured, user_id=setting.user_id))
