"""Event → read model. Each event's effect, its inbox record and the consumer's stream position are
written in one transaction (a fetched batch of events in one), so a redelivery changes nothing and a
crash loses nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.projections import store
from shared.bus import Subscription
from shared.contracts import Envelope, EventData
from shared.contracts import identity as idc
from shared.contracts import ledger as lc
from shared.inbox import first_delivery

Apply = Callable[[AsyncConnection, Envelope, EventData, int], Awaitable[None]]


async def user_registered(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, idc.UserRegistered)
    await store.upsert_user(conn, {**body.model_dump(), "at": env.occurred_at})


async def user_updated(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, idc.UserUpdated)
    await store.upsert_user(conn, {**body.model_dump(), "at": env.occurred_at})


async def user_deactivated(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, idc.UserDeactivated)
    await store.set_user_active(conn, body.user_id, False)


async def user_reactivated(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, idc.UserReactivated)
    await store.set_user_active(conn, body.user_id, True)


async def credits_moved(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    """A grant, a debit, an expiry or a capture: its credit-log line (if any) and the balance it left."""
    assert isinstance(body, lc.CreditsGranted | lc.CreditsDebited | lc.CreditsExpired | lc.CreditsCaptured)
    if (line := lc.credit_entry(body)) is not None:
        await store.add_entry(
            conn,
            {
                "seq": seq,
                "event_id": env.id,
                "user_id": body.user_id,
                "entry_type": line.entry_type.value,
                "amount": line.amount,
                "balance_after": line.balance_after,
                "description": line.description,
                "metadata": line.metadata,
                "occurred_at": env.occurred_at,
            },
        )
    reserved = body.reserved_after if isinstance(body, lc.CreditsCaptured) else None
    await store.set_balance(
        conn, body.user_id, seq=seq, at=env.occurred_at, balance=body.balance_after, reserved=reserved
    )


async def hold_changed(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, lc.CreditsReserved | lc.CreditsReleased)
    await store.set_balance(conn, body.user_id, seq=seq, at=env.occurred_at, reserved=body.reserved_after)


HANDLERS: dict[str, Apply] = {
    idc.UserRegistered.type: user_registered,
    idc.UserUpdated.type: user_updated,
    idc.UserDeactivated.type: user_deactivated,
    idc.UserReactivated.type: user_reactivated,
    lc.CreditsGranted.type: credits_moved,
    lc.CreditsDebited.type: credits_moved,
    lc.CreditsExpired.type: credits_moved,
    lc.CreditsCaptured.type: credits_moved,
    lc.CreditsReserved.type: hold_changed,
    lc.CreditsReleased.type: hold_changed,
}


def subscriptions(pool: AsyncConnectionPool, on_change: Callable[[str], None]) -> list[Subscription]:
    def consumer(stream: str, durable: str, subjects: tuple[str, ...]) -> Subscription:
        async def apply_all(events: Sequence[tuple[Envelope, int]]) -> None:
            changed: set[str] = set()
            async with pool.connection() as conn, conn.transaction():
                for envelope, seq in events:
                    handler = HANDLERS.get(envelope.type)
                    if await first_delivery(conn, durable, envelope.id) and handler is not None:
                        await handler(conn, envelope, envelope.body(), seq)
                        changed.update([envelope.user_id] if envelope.user_id else [])
                await store.record_position(conn, durable, stream, max(seq for _, seq in events))
            for user_id in changed:
                on_change(user_id)

        async def apply(envelope: Envelope, seq: int) -> None:
            await apply_all([(envelope, seq)])

        return Subscription(stream, durable, subjects, apply, apply_all)

    return [
        consumer("IDENTITY", "projections-identity", ("identity.>",)),
        consumer("LEDGER", "projections-ledger", ("ledger.credits.>", "ledger.debit.>")),
    ]
