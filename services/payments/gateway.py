"""The port to Stripe: the calls payments makes, through the official SDK (async, httpx), and what they raise.

Every call that creates something carries an idempotency key derived from our own ids, so a
command retried after a crash asks Stripe for the same object again. localstripe ignores those
keys, so the calls that must never happen twice also look before they act (a refund lists the
refunds already made for its transaction first)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import stripe
from stripe._base_address import BaseAddresses
from stripe.params import (
    CustomerCreateParams,
    CustomerUpdateParams,
    EventListParams,
    PaymentIntentCreateParams,
    PlanCreateParams,
    RefundCreateParams,
    SubscriptionCreateParams,
    SubscriptionUpdateParams,
)

from services.payments.domain import (
    InvoiceState,
    PaymentsError,
    PaymentState,
    Subscription,
    SubscriptionState,
    Transaction,
)
from services.payments.stripe_objects import Card, card, invoice_state, payment_state, subscription_state
from shared.credits import SubscriptionPlan


class StripeUnavailableError(PaymentsError):
    """Stripe could not be reached or refused the call: nothing was stored."""


class NotAtStripeError(PaymentsError, LookupError):
    """Stripe has no such object: an event naming it is none of ours (or not Stripe's)."""


class CardRefusedError(PaymentsError):
    """Stripe refused the card (declined when attached, or not a card of this customer)."""


class NotPayableError(PaymentsError):
    """The PaymentIntent takes no card now: it is paid, being paid, or cancelled."""


@dataclass(frozen=True)
class ListedIntent:
    id: str
    created: int
    transaction_id: str | None


class StripeGateway:
    def __init__(self, secret_key: str, api_base: str | None = None) -> None:
        # The SDK and its HTTP client log every request at INFO: a line per call is noise, not news.
        for name in ("stripe", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)
        base: BaseAddresses | None = {"api": api_base} if api_base else None
        self._client = stripe.StripeClient(
            secret_key, base_addresses=base, http_client=stripe.HTTPXClient(), max_network_retries=2
        )

    async def create_payment_intent(self, tx: Transaction) -> tuple[str, str]:
        """(id, client_secret) of a new PaymentIntent for `tx`; card details never reach us."""
        params: PaymentIntentCreateParams = {
            "amount": tx.amount_cents,
            "currency": tx.currency.lower(),
            # Cards only (Checkout's other methods need redirects we do not handle); the SDK's type omits the key.
            "payment_method_types": ["card"],  # type: ignore[typeddict-unknown-key]
            "metadata": _intent_metadata(tx),
        }
        intent = await self._call(
            self._client.v1.payment_intents.create_async(params, {"idempotency_key": f"checkout:{tx.id}"})
        )
        return intent.id, str(intent.client_secret)

    async def client_secret(self, payment_intent_id: str) -> str:
        intent = await self._call(self._client.v1.payment_intents.retrieve_async(payment_intent_id))
        return str(intent.client_secret)

    async def payment_state(self, payment_intent_id: str) -> PaymentState:
        retrieve = self._client.v1.payment_intents.retrieve_async(payment_intent_id, {"expand": ["latest_charge"]})
        return payment_state((await self._call(retrieve)).to_dict())

    async def refund(self, tx: Transaction, amount_cents: int, reason: str) -> PaymentState:
        """Refund `amount_cents` of `tx`'s payment, unless a refund for it exists; Stripe's state after."""
        assert tx.stripe_payment_intent_id, "only a paid transaction is refunded"
        intent = tx.stripe_payment_intent_id
        made = await self._call(self._client.v1.refunds.list_async({"payment_intent": intent, "limit": 100}))
        ours = [r for r in made.data if _metadata(r).get("transaction_id") == tx.id]
        if ours:
            refund_id = ours[0].id
        else:
            params: RefundCreateParams = {
                "payment_intent": intent,
                "amount": amount_cents,
                "metadata": {"transaction_id": tx.id, "reason": reason[:500]},
            }
            refund = await self._call(
                self._client.v1.refunds.create_async(params, {"idempotency_key": f"refund:{tx.id}"})
            )
            refund_id = refund.id
        state = await self.payment_state(intent)
        return replace(state, refund_id=refund_id)

    async def payment_intents(self) -> AsyncIterator[ListedIntent]:
        """Every PaymentIntent of the account (newest first at Stripe; localstripe lists oldest first)."""
        page = await self._call(self._client.v1.payment_intents.list_async({"limit": 100}))
        while True:
            for intent in page.data:
                yield ListedIntent(intent.id, int(intent.created), _metadata(intent).get("transaction_id"))
            if not page.has_more or not page.data:
                return
            page = await self._call(
                self._client.v1.payment_intents.list_async({"limit": 100, "starting_after": page.data[-1].id})
            )

    async def events(self, since: int) -> AsyncIterator[dict[str, Any]]:
        """Every event Stripe emitted since `since` (unix seconds), as its JSON."""
        params: EventListParams = {"limit": 100, "created": {"gte": since}}
        page = await self._call(self._client.v1.events.list_async(params))
        while True:
            for event in page.data:
                yield event.to_dict()
            if not page.has_more or not page.data:
                return
            params = {**params, "starting_after": page.data[-1].id}
            page = await self._call(self._client.v1.events.list_async(params))

    # -- saved cards and subscriptions -------------------------------------------------------------

    async def create_customer(self, user_id: str) -> str:
        params: CustomerCreateParams = {"metadata": {"user_id": user_id}}
        customer = await self._call(
            self._client.v1.customers.create_async(params, {"idempotency_key": f"customer:{user_id}"})
        )
        return str(customer.id)

    async def save_card(self, customer: str, payment_method: str) -> None:
        """Attach a PaymentMethod made client-side to the customer and make it their default."""
        try:
            await self._client.v1.payment_methods.attach_async(payment_method, {"customer": customer})
        except stripe.CardError as exc:
            raise CardRefusedError(exc.user_message or "the card was declined") from exc
        except stripe.InvalidRequestError as exc:
            raise CardRefusedError(exc.user_message or "no such payment method") from exc
        except stripe.StripeError as exc:
            raise StripeUnavailableError(f"Stripe: {exc.user_message or exc}") from exc
        params: CustomerUpdateParams = {"invoice_settings": {"default_payment_method": payment_method}}
        await self._call(self._client.v1.customers.update_async(customer, params))

    async def cards(self, customer: str) -> list[Card]:
        default = await self.default_card(customer)
        methods = await self._call(
            self._client.v1.payment_methods.list_async({"customer": customer, "type": "card", "limit": 100})
        )
        return [c for m in methods.data if (c := card(m.to_dict(), default)) is not None]

    async def default_card(self, customer: str) -> str | None:
        found = await self._call(self._client.v1.customers.retrieve_async(customer))
        default = (found.to_dict().get("invoice_settings") or {}).get("default_payment_method")
        return str(default) if default else None

    async def ensure_plan(self, plan: SubscriptionPlan) -> str:
        """The Stripe plan of one of ours (made on first use, under a fixed id)."""
        plan_id = f"creditstream-{plan.id}"
        try:
            await self._client.v1.plans.retrieve_async(plan_id)
            return plan_id
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise StripeUnavailableError(f"Stripe: {exc.user_message or exc}") from exc
        params: PlanCreateParams = {
            "id": plan_id, "amount": plan.price_cents, "currency": plan.currency.lower(), "interval": plan.interval,
            "product": {"name": f"creditstream {plan.name}"},
        }  # fmt: skip
        await self._call(self._client.v1.plans.create_async(params, {"idempotency_key": f"plan:{plan_id}"}))
        return plan_id

    async def subscribe(self, customer: str, stripe_plan: str, sub: Subscription) -> SubscriptionState:
        params: SubscriptionCreateParams = {
            "customer": customer,
            "items": [{"plan": stripe_plan}],
            "metadata": {"subscription_id": sub.id, "user_id": sub.user_id, "plan_id": sub.plan_id},
        }
        created = await self._call(
            self._client.v1.subscriptions.create_async(params, {"idempotency_key": f"subscription:{sub.id}"})
        )
        return subscription_state(created.to_dict())

    async def subscription(self, stripe_id: str) -> SubscriptionState:
        return subscription_state((await self._call(self._client.v1.subscriptions.retrieve_async(stripe_id))).to_dict())

    async def cancel_at_period_end(self, stripe_id: str) -> SubscriptionState:
        params: SubscriptionUpdateParams = {"cancel_at_period_end": True}
        updated = await self._call(self._client.v1.subscriptions.update_async(stripe_id, params))
        return subscription_state(updated.to_dict())

    async def buy_off_session(self, tx: Transaction, customer: str, payment_method: str) -> PaymentState:
        """Charge the saved card without the customer present: Stripe's state after (succeeded, or
        requires_action for a card that needs the customer); a decline raises CardRefusedError."""
        params: PaymentIntentCreateParams = {
            "amount": tx.amount_cents, "currency": tx.currency.lower(), "customer": customer,
            "payment_method": payment_method, "confirm": True, "off_session": True,
            "metadata": {**_intent_metadata(tx), "auto_recharge": "true"},
        }  # fmt: skip
        intent = await _charge(
            self._client.v1.payment_intents.create_async(
                params,
                {"idempotency_key": f"checkout:{tx.id}"},
            )
        )
        return await self.payment_state(intent.id)

    async def pay_with_card(self, payment_intent_id: str, number: str) -> PaymentState:
        """What Stripe.js does with a card the customer typed (development against localstripe only): a card
        PaymentMethod, set on the intent, then confirmed. A decline raises CardRefusedError; an intent that is
        paid already (or cancelled) raises NotPayableError."""
        before = await self.payment_state(payment_intent_id)
        if before.status not in ("requires_payment_method", "requires_confirmation"):
            raise NotPayableError(before.status)
        # Raw card numbers are a Stripe.js-only parameter (the SDK's types leave them out): localstripe takes them.
        params: Any = {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034,
                                                            "cvc": "123"}}  # fmt: skip
        method = await self._call(self._client.v1.payment_methods.create_async(params))
        intents = self._client.v1.payment_intents
        await self._call(intents.update_async(payment_intent_id, {"payment_method": method.id}))
        await _charge(intents.confirm_async(payment_intent_id))
        state = await self.payment_state(payment_intent_id)
        if state.status == "requires_payment_method":  # charged and declined: the intent waits for another card
            raise CardRefusedError(state.failure or "the card was declined")
        return state

    async def cancel_payment(self, payment_intent_id: str) -> PaymentState:
        await self._call(self._client.v1.payment_intents.cancel_async(payment_intent_id))
        return await self.payment_state(payment_intent_id)

    async def invoice(self, invoice_id: str) -> InvoiceState:
        return invoice_state((await self._call(self._client.v1.invoices.retrieve_async(invoice_id))).to_dict())

    @staticmethod
    async def _call(call: Any) -> Any:
        try:
            return await call
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                raise NotAtStripeError(str(exc.user_message or exc)) from exc
            raise StripeUnavailableError(f"Stripe: {exc.user_message or exc}") from exc
        except stripe.StripeError as exc:
            raise StripeUnavailableError(f"Stripe: {exc.user_message or exc}") from exc


def configured(gateway: StripeGateway | None) -> StripeGateway:
    """The gateway; where Stripe is not configured, every call to it is refused as Stripe's refusal is."""
    if gateway is None:
        raise StripeUnavailableError("Stripe is not configured (STRIPE_SECRET_KEY)")
    return gateway


async def _charge(call: Any) -> Any:
    """A call that charges a card: Stripe declining it is the card's refusal, anything else Stripe's failure."""
    try:
        return await call
    except stripe.CardError as exc:
        raise CardRefusedError(exc.user_message or "the card was declined") from exc
    except stripe.StripeError as exc:
        raise StripeUnavailableError(f"Stripe: {exc.user_message or exc}") from exc


def _intent_metadata(tx: Transaction) -> dict[str, str]:
    """What a PaymentIntent says of its transaction: how Stripe's word on it finds its way back."""
    return {
        "transaction_id": tx.id,
        "user_id": tx.user_id,
        "package_id": tx.package_id or "",
        "credits": str(tx.credits),
    }


def _metadata(obj: Any) -> dict[str, Any]:
    # A StripeObject is not a dict in stripe 16: `.get` raises.
    return dict(obj.to_dict().get("metadata") or {})
