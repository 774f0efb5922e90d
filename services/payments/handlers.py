"""Inbound contract events → payments' commands; translation only (the rules are the application's).

Payments tells the ledger each user's auto-recharge threshold (`payments.autorecharge.configured`); the ledger
announces a crossing as `ledger.balance.low` with `recharge_threshold` set, in the transaction of the debit,
hold or expiry that crossed. It applies one account's commands one at a time, so of twenty debits that together
go below the threshold exactly one crosses; the crossing's event id makes a redelivery of it buy nothing more."""

from __future__ import annotations

from services.payments.application import Payments
from services.payments.commands import Recharge
from shared.bus import Subscription
from shared.contracts import Envelope
from shared.contracts import ledger as lc

# Every event payments acts on, by the stream it comes from, and the durable consumer that reads it.
SUBSCRIBED = {("LEDGER", "payments-ledger"): (lc.BalanceLow,)}


def to_command(envelope: Envelope) -> Recharge | None:
    match envelope.body():
        case lc.BalanceLow(user_id=user_id, recharge_threshold=int()):
            return Recharge(user_id=user_id, crossing=str(envelope.id))
        case _:
            return None  # a crossing of the low-balance warning only: no auto-recharge watches it


async def handle(payments: Payments, envelope: Envelope) -> None:
    if (command := to_command(envelope)) is not None:
        await payments.handle(command)


def subscriptions(payments: Payments) -> list[Subscription]:
    async def on_event(envelope: Envelope, _seq: int) -> None:
        await handle(payments, envelope)

    return [
        Subscription(stream, durable, tuple(t.type for t in types), on_event)
        for (stream, durable), types in SUBSCRIBED.items()
    ]
