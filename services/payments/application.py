"""Payments' use cases, one per command (commands.py), run by `Payments.handle` through its command_handlers
(every command at a glance): buying a pack, refunds, saved cards, subscriptions and auto-recharge here; taking
in and reconciling what Stripe says in stripe_events.py. Reading takes no command.

Each writes its state and its events in one transaction. Where Stripe's answer must be kept with it (a
refund, a subscription, an off-session purchase), Stripe is asked inside that transaction: if Stripe fails
nothing is kept, and every Stripe call carries a key derived from our ids, so a retry asks for the same object."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.payments import billing_store, events, store
from services.payments.commands import (
    Answer,
    CancelSubscription,
    Checkout,
    Command,
    ConfigureAutoRecharge,
    CreatePromo,
    DisablePromo,
    PayWithTestCard,
    ReceiveStripeEvent,
    Recharge,
    Reconcile,
    RedeemPromo,
    Refund,
    SaveCard,
    StartedCheckout,
    Subscribe,
    TransactionQuery,
)
from services.payments.domain import (
    RECHARGE_COOLDOWN,
    AlreadySubscribedError,
    AutoRecharge,
    Change,
    NoCardError,
    NotPendingError,
    PaymentState,
    PromoCode,
    PromoExistsError,
    PromoTakenError,
    PromoUnavailableError,
    RechargesThisMonth,
    Redemption,
    Status,
    Subscription,
    SubscriptionNotFoundError,
    SubscriptionStatus,
    Transaction,
    TransactionNotFoundError,
    UnknownPackageError,
    UnknownPlanError,
    checkout_purchase,
    month_start,
    observe,
    promo_key,
    recharge_purchase,
    refund_amount,
    why_not,
)
from services.payments.gateway import (
    CardRefusedError,
    StripeGateway,
    StripeUnavailableError,
    configured,
)
from services.payments.stripe_events import StripeEvents, observe_payment, record
from services.payments.stripe_objects import Card
from shared import idempotency, outbox
from shared.contracts import derive_id
from shared.credits import PACKAGES, PLANS, TOPUP, PriceTable, parse_price_table, topup
from shared.idempotency import IdempotencyConflictError, fingerprint
from shared.outbox import OutboxRelay

log = logging.getLogger(__name__)
DEFAULT_TOPUP_PRICES = parse_price_table("20:19.98,150:16.66,500:16")
Read = TypeVar("Read")


class Payments:
    def __init__(
        self, pool: AsyncConnectionPool, relay: OutboxRelay, gateway: StripeGateway | None, *,
        recharge_cooldown: timedelta = RECHARGE_COOLDOWN, topup_prices: PriceTable = DEFAULT_TOPUP_PRICES,
    ) -> None:  # fmt: skip
        self._pool = pool
        self._topup_prices = topup_prices
        self._recharge_cooldown = recharge_cooldown
        self._relay = relay
        self._gateway = gateway
        self.stripe_events = StripeEvents(pool, relay, gateway)
        # Every command, and the use case that answers it.
        self.command_handlers: dict[type[Command[Any]], Callable[[Any], Awaitable[Any]]] = {
            Checkout: self.checkout,
            PayWithTestCard: self.pay_with_test_card,
            Refund: self.refund,
            ReceiveStripeEvent: self.stripe_events.receive,
            Reconcile: self.stripe_events.reconcile,
            SaveCard: self.save_card,
            Subscribe: self.subscribe,
            CancelSubscription: self.cancel_subscription,
            ConfigureAutoRecharge: self.configure_auto_recharge,
            Recharge: self.recharge,
            CreatePromo: self.create_promo,
            DisablePromo: self.disable_promo,
            RedeemPromo: self.redeem_promo,
        }

    async def handle(self, command: Command[Answer]) -> Answer:
        """Run `command` through its use case; answered with the type the command names."""
        return cast(Answer, await self.command_handlers[type(command)](command))

    @property
    def _stripe(self) -> StripeGateway:
        return configured(self._gateway)

    # -- promo codes ------------------------------------------------------------------------------

    async def create_promo(self, c: CreatePromo) -> PromoCode:
        promo = PromoCode(promo_key(c.code), c.credits, c.max_redemptions, 0, c.valid_until, c.credits_expire_in_days,
                          c.new_users_only, None, datetime.now(UTC), c.admin_id)  # fmt: skip
        async with self._pool.connection() as conn, conn.transaction():
            if not await store.add_promo(conn, promo):
                raise PromoExistsError(promo.code)
            made = await store.promo(conn, promo.code)
        assert made is not None, "just added"
        return made

    async def disable_promo(self, c: DisablePromo) -> PromoCode:
        async with self._pool.connection() as conn, conn.transaction():
            disabled = await store.disable_promo(conn, promo_key(c.code))
        if disabled is None:
            raise PromoUnavailableError(c.code)
        return disabled

    async def promos(self) -> list[PromoCode]:
        return await self._read(store.promos)

    async def redeem_promo(self, c: RedeemPromo) -> Redemption:
        """Under the code's row lock: whoever redeems it at once are lined up, so the count never passes the
        maximum and an account redeems a code once; the grant goes to the ledger in the same transaction."""
        code, now, new_id = promo_key(c.code), datetime.now(UTC), str(uuid.uuid4())
        async with self._pool.connection() as conn, conn.transaction():
            held = await idempotency.claim(conn, f"promo:{c.user_id}", c.key, fingerprint("promo", code), new_id)
            if held != new_id:
                first = await store.redemption(conn, held)
                assert first is not None, "a claimed key's redemption commits with it"
                return first
            promo = await store.promo(conn, code, lock=True)
            if promo is None or not promo.redeemable(now):
                raise PromoUnavailableError(code)
            if (before := await store.redemption_of(conn, code, c.user_id)) is not None:
                raise PromoTakenError(before)
            if promo.new_users_only and await store.has_bought(conn, c.user_id):
                raise PromoUnavailableError(code)
            redemption = Redemption(new_id, code, c.user_id, promo.credits, promo.lot_expiry(now), now)
            if not await store.redeem(conn, redemption):  # the unique pair backs the lock up
                raise PromoUnavailableError(code)
            await outbox.add(conn, events.promo_redeemed(redemption))
        self._relay.wake()
        return redemption

    # -- buying and refunds -----------------------------------------------------------------------

    async def checkout(self, command: Checkout) -> StartedCheckout:
        package = (
            topup(command.credits, self._topup_prices) if command.package_id == TOPUP and command.credits
            else PACKAGES.get(command.package_id)
        )  # fmt: skip
        if package is None:
            raise UnknownPackageError(command.package_id)
        gateway, user_id = self._stripe, command.user_id
        tx = checkout_purchase(str(uuid.uuid4()), user_id, package, command.correlation_id, datetime.now(UTC))
        # A pack is its id; a top-up its count (its price follows from the table of the day it was asked).
        meaning = fingerprint(package.id) if package.id != TOPUP else fingerprint(package.id, package.credits)
        async with self._pool.connection() as conn, conn.transaction():
            tx_id = await idempotency.claim(conn, f"checkout:{user_id}", command.key, meaning, tx.id)
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
                return StartedCheckout(current, secret)
        assert current.stripe_payment_intent_id, "the checkout stored it"
        return StartedCheckout(current, await gateway.client_secret(current.stripe_payment_intent_id))

    async def pay_with_test_card(self, command: PayWithTestCard) -> PaymentState:
        """The payment then takes the ordinary road: Stripe's signed webhook, the inbox, the ledger."""
        tx = await self.transaction(command.transaction_id)
        if tx.user_id != command.user_id:
            raise TransactionNotFoundError(command.transaction_id)
        if tx.status != Status.PENDING or not tx.stripe_payment_intent_id:
            raise NotPendingError(tx.status)
        return await self._stripe.pay_with_card(tx.stripe_payment_intent_id, command.card_number)

    async def refund(self, command: Refund) -> Transaction:
        """Refund at Stripe and record Stripe's answer: the refund is recorded only as Stripe has it."""
        tx_id, key = command.transaction_id, command.key
        gateway = self._stripe
        async with self._pool.connection() as conn, conn.transaction():
            meaning = fingerprint(tx_id, command.reason, command.amount_cents)
            if await idempotency.claim(conn, "refund", key, meaning, tx_id) != tx_id:
                raise IdempotencyConflictError(key)
            tx = await store.get(conn, tx_id, lock=True)
            if tx is None:
                raise TransactionNotFoundError(tx_id)
            if tx.refunded_under(key):
                return tx
            state = await gateway.refund(tx, refund_amount(tx, command.amount_cents), command.reason)
            change = observe(tx, state, datetime.now(UTC), reason=command.reason)
            if change.transaction.status is not Status.REFUNDED:
                raise StripeUnavailableError(f"Stripe did not record the refund (the payment is {state.status})")
            change.transaction.metadata["refund"].update(admin_id=command.admin_id, idempotency_key=key)
            await record(conn, change)
        self._relay.wake()
        return change.transaction

    # -- cards and subscriptions ------------------------------------------------------------------

    async def save_card(self, command: SaveCard) -> list[Card]:
        customer = await self._customer(command.user_id)
        await self._stripe.save_card(customer, command.payment_method)
        return await self._stripe.cards(customer)

    async def subscribe(self, command: Subscribe) -> Subscription:
        """The key's claim, the row and the Stripe call share one transaction, and the subscription's id (so
        Stripe's idempotency key) is derived from the key: a retry after a crash asks Stripe for the same one."""
        plan = PLANS.get(command.plan_id)
        if plan is None:
            raise UnknownPlanError(command.plan_id)
        gateway, user_id = self._stripe, command.user_id
        sub_id = str(derive_id("subscription", user_id, command.key))
        async with self._pool.connection() as conn, conn.transaction():
            held_id = await idempotency.claim(conn, f"subscribe:{user_id}", command.key, fingerprint(plan.id), sub_id)
            if (existing := await billing_store.subscription(conn, held_id)) is not None:
                return existing
            if (paying := await self._paying(await billing_store.customer_of(conn, user_id))) is None:
                raise NoCardError(user_id)
            now = datetime.now(UTC)
            sub = Subscription(
                sub_id, user_id, plan.id, SubscriptionStatus.INCOMPLETE, None, None, None, False, now, now
            )
            if not await billing_store.insert_subscription(conn, sub):
                raise AlreadySubscribedError(user_id)
            state = await gateway.subscribe(paying[0], await gateway.ensure_plan(plan), sub)
            sub = replace(sub, stripe_subscription_id=state.id).following(state, datetime.now(UTC))
            await billing_store.save_subscription(conn, sub)
        return sub

    async def cancel_subscription(self, command: CancelSubscription) -> Subscription:
        async with self._pool.connection() as conn, conn.transaction():
            sub = await billing_store.subscription(conn, command.subscription_id, lock=True)
            if sub is None or sub.user_id != command.user_id:
                raise SubscriptionNotFoundError(command.subscription_id)
            if sub.status is SubscriptionStatus.CANCELLED or sub.cancel_at_period_end or not sub.stripe_subscription_id:
                return sub
            state = await self._stripe.cancel_at_period_end(sub.stripe_subscription_id)
            sub = sub.following(state, datetime.now(UTC))
            await billing_store.save_subscription(conn, sub)
        return sub

    async def _customer(self, user_id: str) -> str:
        """The user's Stripe customer, made with their first card (once, however many first cards race)."""
        async with self._pool.connection() as conn, conn.transaction():
            if (known := await billing_store.customer_of(conn, user_id)) is not None:
                return known
            await billing_store.lock_customer(conn, user_id)
            if (known := await billing_store.customer_of(conn, user_id)) is not None:
                return known
            customer = await self._stripe.create_customer(user_id)
            await billing_store.add_customer(conn, user_id, customer)
            return customer

    async def _paying(self, customer: str | None) -> tuple[str, str] | None:
        """A customer and their default card, what a payment without the customer needs; None without either."""
        card = await self._stripe.default_card(customer) if customer else None
        return (customer, card) if customer and card else None

    # -- auto-recharge ----------------------------------------------------------------------------

    async def configure_auto_recharge(self, command: ConfigureAutoRecharge) -> AutoRecharge:
        if command.package_id not in PACKAGES:
            raise UnknownPackageError(command.package_id)
        setting = AutoRecharge(
            user_id=command.user_id, enabled=command.enabled, threshold=command.threshold,
            package_id=command.package_id, monthly_cap_cents=command.monthly_cap_cents, disabled_reason=None,
            updated_at=datetime.now(UTC), monthly_max_recharges=command.monthly_max_recharges,
        )  # fmt: skip
        if setting.enabled:
            customer = await self._read(lambda conn: billing_store.customer_of(conn, setting.user_id))
            if await self._paying(customer) is None:
                raise NoCardError(setting.user_id)
        async with self._pool.connection() as conn, conn.transaction():
            await _save_setting(conn, setting)
        self._relay.wake()
        return setting

    async def recharge(self, command: Recharge) -> None:
        """The crossing's claim, the purchase and its outcome share one transaction under a lock of the user's
        setting, so a redelivery, or another payments process with the same message, finds the crossing done.
        A card that needs the customer or is declined turns auto-recharge off: it never retries in a loop."""
        async with self._pool.connection() as conn, conn.transaction():
            setting = await billing_store.auto_recharge(conn, command.user_id, lock=True)
            if setting is None or not setting.enabled:
                return  # turned off since the ledger was told
            if await billing_store.claim_crossing(conn, command.crossing, setting.user_id):
                await self._buy_off_session(conn, setting, command.crossing)
        self._relay.wake()

    async def _buy_off_session(self, conn: AsyncConnection, setting: AutoRecharge, crossing: str) -> None:
        package, now = PACKAGES[setting.package_id], datetime.now(UTC)
        done = await billing_store.recharged(conn, setting.user_id, month_start(now))
        if (reason := why_not(setting, package.price_cents, done, now, self._recharge_cooldown)) is not None:
            await billing_store.settle_crossing(conn, crossing, f"skipped: {reason}")
            if "cap" in reason:
                await _recharge_failed(conn, setting, reason, disable=False)
            return
        gateway = self._stripe
        if (paying := await self._paying(await billing_store.customer_of(conn, setting.user_id))) is None:
            await billing_store.settle_crossing(conn, crossing, "skipped: no saved card")
            await _recharge_failed(conn, setting, "there is no saved card to buy with", disable=True)
            return
        tx = recharge_purchase(setting, crossing, now)
        await store.insert(conn, tx)
        try:
            state = await gateway.buy_off_session(tx, *paying)
        except CardRefusedError as exc:
            failed = replace(tx, status=Status.FAILED, metadata={**tx.metadata, "failure": str(exc)})
            await record(conn, Change(failed, tx.status, (Status.FAILED,)))
            await billing_store.settle_crossing(conn, crossing, f"declined: {exc}", tx.id)
            await _recharge_failed(conn, setting, f"the card was declined: {exc}", disable=True)
            return
        if state.status == "requires_action":
            # Nobody is there to authenticate: let the intent go rather than leave it waiting.
            await observe_payment(conn, await gateway.cancel_payment(state.payment_intent_id))
            await billing_store.settle_crossing(conn, crossing, "the card needs authentication", tx.id)
            await _recharge_failed(
                conn, setting, "the card needs the customer to authenticate the payment", disable=True
            )
            return
        await observe_payment(conn, state)
        await billing_store.settle_crossing(conn, crossing, f"bought: {state.status}", tx.id, package.price_cents)
        await outbox.add(conn, events.recharged(setting, tx, crossing))

    # -- reading ----------------------------------------------------------------------------------

    async def transaction(self, tx_id: str) -> Transaction:
        if (tx := await self._read(lambda conn: store.get(conn, tx_id))) is None:
            raise TransactionNotFoundError(tx_id)
        return tx

    async def receipt_url(self, tx: Transaction) -> str | None:
        """Stripe's own receipt of a payment, when Stripe keeps one (a receipt reads without it: None)."""
        if (
            self._gateway is None
            or not tx.stripe_payment_intent_id
            or tx.status not in (Status.COMPLETED, Status.REFUNDED)
        ):
            return None
        try:
            return (await self._gateway.payment_state(tx.stripe_payment_intent_id)).receipt_url
        except StripeUnavailableError:
            return None

    async def transactions(
        self, query: TransactionQuery, after: tuple[datetime, str] | None, limit: int
    ) -> list[Transaction]:
        return await self._read(lambda conn: store.page(conn, query, after, limit))

    async def totals(self, user_id: str) -> list[dict[str, Any]]:
        return await self._read(lambda conn: store.totals_by_status(conn, user_id))

    async def cards(self, user_id: str) -> list[Card]:
        customer = await self._read(lambda conn: billing_store.customer_of(conn, user_id))
        return await self._stripe.cards(customer) if customer else []

    async def current_subscription(self, user_id: str) -> Subscription | None:
        return await self._read(lambda conn: billing_store.current_subscription(conn, user_id))

    async def auto_recharge(self, user_id: str) -> tuple[AutoRecharge | None, RechargesThisMonth]:
        """The user's setting and what it bought this calendar month (UTC)."""
        async with self._pool.connection() as conn:
            done = await billing_store.recharged(conn, user_id, month_start(datetime.now(UTC)))
            return await billing_store.auto_recharge(conn, user_id), done

    async def _read(self, query: Callable[[AsyncConnection], Awaitable[Read]]) -> Read:
        async with self._pool.connection() as conn:
            return await query(conn)


async def _save_setting(conn: AsyncConnection, setting: AutoRecharge) -> None:
    """Save a user's auto-recharge and tell the ledger where to watch their balance, in one transaction."""
    await billing_store.save_auto_recharge(conn, setting)
    await outbox.add(conn, events.recharge_configured(setting))


async def _recharge_failed(conn: AsyncConnection, setting: AutoRecharge, reason: str, *, disable: bool) -> None:
    if disable:
        await _save_setting(conn, replace(setting, enabled=False, disabled_reason=reason, updated_at=datetime.now(UTC)))
    await outbox.add(conn, events.recharge_failed(setting, reason, disabled=disable))
    log.info("auto-recharge of %s: %s", setting.user_id, reason)
