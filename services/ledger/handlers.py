"""Inbound contract events → ledger commands. Each command is idempotent by its key, so the
account's own history is the inbox: a redelivered event finds its first outcome and does nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from services.ledger.application import Ledger
from shared.bus import Subscription
from shared.contracts import Envelope
from shared.contracts.identity import UserRegistered

EventHandler = Callable[[Ledger, Envelope], Awaitable[None]]


async def on_user_registered(ledger: Ledger, envelope: Envelope) -> None:
    body = envelope.body()
    assert isinstance(body, UserRegistered)
    await asyncio.to_thread(
        ledger.welcome, body.user_id, cause_id=str(envelope.id), correlation_id=envelope.correlation_id
    )


HANDLERS: dict[str, EventHandler] = {
    UserRegistered.type: on_user_registered,
}


def subscriptions(ledger: Ledger, on_applied: Callable[[], None]) -> list[Subscription]:
    async def dispatch(envelope: Envelope, _seq: int) -> None:
        handler = HANDLERS.get(envelope.type)
        if handler is not None:
            await handler(ledger, envelope)
            on_applied()

    return [Subscription("IDENTITY", "ledger-identity", ("identity.user.registered",), dispatch)]
