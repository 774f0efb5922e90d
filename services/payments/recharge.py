"""Auto-recharge: when the ledger says a user's available credit crossed below their threshold, buy
their pack off-session with their default card.

Payments tells the ledger each user's threshold (`payments.autorecharge.configured`); the ledger
announces a crossing as `ledger.balance.low` with `recharge_threshold` set, in the transaction of the
debit, hold or expiry that crossed. It applies one account's commands one at a time, so of twenty
debits that together go below the threshold exactly one crosses. The crossing's claim, the purchase
and its outcome share one transaction under a lock of the user's setting, so a redelivery, or another
payments process with the same message, finds the crossing done. A card that needs the customer
(requires_action) or is declined turns auto-recharge off with the reason: it never retries in a loop."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.payments import store
from services.payments.application import Payments, announce
from services.payments.billing import AutoRecharge, CardRefusedError, why_not
from services.payments.domain import Kind, Status, Transaction
from services.payments.subscriptions import save_setting
from shared import outbox
from shared.bus import Subscription
from shared.contracts import Envelope
from shared.contracts import ledger as lc
from shared.contracts import payments as pc
from shared.credits import PACKAGES

log = logging.getLogger(__name__)


class AutoRecharger:
    def __init__(self, pool: AsyncConnectionPool, payments: Payments) -> None:
        self._pool = pool
        self._payments = payments

    def subscription(self) -> Subscription:
        return Subscription("LEDGER", "payments-ledger", (lc.BalanceLow.type,), self.on_ledger_event)

    async def on_ledger_event(self, envelope: Envelope, _seq: int) -> None:
        match envelope.body():
            case lc.BalanceLow(user_id=user_id, recharge_threshold=int()):
                pass
            case _:
                return
        async with self._pool.connection() as conn, conn.transaction():
            setting = await store.auto_recharge(conn, user_id, lock=True)
            if setting is None or not setting.enabled:
                return  # turned off since the ledger was told
            if await store.claim_crossing(conn, str(envelope.id), setting.user_id):
                await self._recharge(conn, setting, str(envelope.id))
        self._payments.billing.wake()

    async def _recharge(self, conn: AsyncConnection, setting: AutoRecharge, crossing: str) -> None:
        package = PACKAGES[setting.package_id]
        now = datetime.now(UTC)
        month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        spent, last = await store.recharged(conn, setting.user_id, month)
        if (reason := why_not(setting, package.price_cents, spent, last, now)) is not None:
            await store.settle_crossing(conn, crossing, f"skipped: {reason}")
            if "cap" in reason:
                await self._failed(conn, setting, reason, disable=False)
            return
        gateway = self._payments.gateway
        customer = await store.customer_of(conn, setting.user_id)
        card = await gateway.default_card(customer) if customer else None
        if customer is None or card is None:
            await store.settle_crossing(conn, crossing, "skipped: no saved card")
            await self._failed(conn, setting, "there is no saved card to buy with", disable=True)
            return
        tx = _purchase(setting, crossing, now)
        await store.insert(conn, tx)
        try:
            state = await gateway.buy_off_session(tx, customer, card)
        except CardRefusedError as exc:
            failed = replace(tx, status=Status.FAILED, metadata={**tx.metadata, "failure": str(exc)})
            await store.save(conn, failed)
            await announce(conn, failed, Status.FAILED)
            await store.settle_crossing(conn, crossing, f"declined: {exc}", tx.id)
            await self._failed(conn, setting, f"the card was declined: {exc}", disable=True)
            return
        if state.status == "requires_action":
            # Nobody is there to authenticate: let the intent go rather than leave it waiting.
            state = await gateway.cancel_payment(state.payment_intent_id)
            await self._payments.observe_in(conn, state)
            await store.settle_crossing(conn, crossing, "the card needs authentication", tx.id)
            await self._failed(conn, setting, "the card needs the customer to authenticate the payment", disable=True)
            return
        await self._payments.observe_in(conn, state)
        await store.settle_crossing(conn, crossing, f"bought: {state.status}", tx.id, package.price_cents)
        succeeded = pc.AutoRechargeSucceeded(
            user_id=setting.user_id, transaction_id=tx.id, package_id=package.id, credits=package.credits,
            amount_cents=package.price_cents,
        )  # fmt: skip
        await outbox.add(conn, Envelope.wrap(succeeded, user_id=setting.user_id, causation_id=crossing))

    async def _failed(self, conn: AsyncConnection, setting: AutoRecharge, reason: str, *, disable: bool) -> None:
        if disable:
            off = replace(setting, enabled=False, disabled_reason=reason, updated_at=datetime.now(UTC))
            await save_setting(conn, off)
        failed = pc.AutoRechargeFailed(
            user_id=setting.user_id, package_id=setting.package_id, reason=reason, disabled=disable
        )
        await outbox.add(conn, Envelope.wrap(failed, user_id=setting.user_id))
        log.info("auto-recharge of %s: %s", setting.user_id, reason)


def _purchase(setting: AutoRecharge, crossing: str, now: datetime) -> Transaction:
    package = PACKAGES[setting.package_id]
    return Transaction(
        id=str(uuid.uuid5(uuid.UUID(crossing), "auto-recharge")), user_id=setting.user_id, kind=Kind.CREDIT_PURCHASE,
        status=Status.PENDING, amount_cents=package.price_cents, currency=package.currency, credits=package.credits,
        description=f"Auto-recharge: {package.name}, {package.credits} credits", package_id=package.id,
        stripe_payment_intent_id=None, metadata={"auto_recharge": True, "crossing_event_id": crossing},
        created_at=now, updated_at=now,
    )  # fmt: skip
