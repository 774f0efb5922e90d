"""Event → read model. Each event's effect, its inbox record and the consumer's stream position are
written in one transaction (a fetched batch of events in one), so a redelivery changes nothing and a
crash loses nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi.encoders import jsonable_encoder
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.projections import store
from shared.bus import Subscription
from shared.bus.streams import STREAMS
from shared.contracts import Envelope, EventData
from shared.contracts import identity as idc
from shared.contracts import ledger as lc
from shared.contracts import media as mc
from shared.contracts import payments as pc
from shared.credits import PACKAGES
from shared.inbox import first_delivery

Apply = Callable[[AsyncConnection, Envelope, EventData, int], Awaitable[None]]


async def user_registered(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, idc.UserRegistered)
    await store.upsert_user(conn, {**body.model_dump(), "at": env.occurred_at, "seq": seq})


async def user_updated(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, idc.UserUpdated)
    await store.upsert_user(conn, {**body.model_dump(), "at": env.occurred_at, "seq": seq})


async def user_deactivated(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, idc.UserDeactivated)
    await store.set_user_active(conn, body.user_id, False, seq=seq, at=env.occurred_at)


async def user_reactivated(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, idc.UserReactivated)
    await store.set_user_active(conn, body.user_id, True, seq=seq, at=env.occurred_at)


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
    match body:
        case lc.CreditsGranted(lot_id=str(lot_id)):
            await store.lot_granted(conn, {"user_id": body.user_id, "lot_id": lot_id, "amount": body.amount,
                                           "expires_at": body.expires_at, "description": body.description,
                                           "at": env.occurred_at})  # fmt: skip
        case lc.CreditsDebited(lots=dict(portions)) | lc.CreditsCaptured(lots=dict(portions)):
            await store.lots_taken(conn, body.user_id, portions)
        case lc.CreditsExpired(lot_id=lot_id):
            await store.lot_expired(conn, body.user_id, lot_id)
    reserved = body.reserved_after if isinstance(body, lc.CreditsCaptured) else None
    figures = await store.set_balance(
        conn, body.user_id, seq=seq, at=env.occurred_at, balance=body.balance_after, reserved=reserved
    )
    await _balance_changed(conn, env, body.user_id, figures)


async def hold_changed(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, lc.CreditsReserved | lc.CreditsReleased)
    figures = await store.set_balance(conn, body.user_id, seq=seq, at=env.occurred_at, reserved=body.reserved_after)
    await _balance_changed(conn, env, body.user_id, figures)


async def _balance_changed(conn: AsyncConnection, env: Envelope, user_id: str, figures: tuple[int, int]) -> None:
    """The account's figures as they now stand, for the user's live feed."""
    balance, reserved = figures
    data = {"balance": balance, "reserved": reserved, "available": balance - reserved}
    await store.add_to_feed(conn, user_id, "balance", data, env.occurred_at)


async def credits_expired(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, lc.CreditsExpired)
    await credits_moved(conn, env, body, seq)
    await _activity(conn, env, body.user_id, "credits_expired", f"{body.amount} credits expired",
                    lot_id=body.lot_id, amount=body.amount)  # fmt: skip


async def _activity(
    conn: AsyncConnection, env: Envelope, user_id: str, kind: str, message: str, *, notification: bool = False,
    **data: Any,
) -> None:  # fmt: skip
    await store.add_activity(conn, {
        "event_id": env.id, "user_id": user_id, "kind": kind, "notification": notification, "message": message,
        "data": jsonable_encoder(data), "at": env.occurred_at,
    })  # fmt: skip
    if notification:
        note = {"kind": kind, "message": message, "data": jsonable_encoder(data)}
        await store.add_to_feed(conn, user_id, "notification", note, env.occurred_at)


# -- notifications from the ledger ---------------------------------------------------------------------


async def balance_low(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, lc.BalanceLow)
    await _activity(conn, env, body.user_id, "balance_low", f"Your balance is low: {body.available} credits left",
                    notification=True, available=body.available)  # fmt: skip


async def credits_expiring(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, lc.CreditsExpiring)
    day = body.expires_at.date().isoformat()
    await _activity(conn, env, body.user_id, "credits_expiring", f"{body.remaining} credits expire on {day}",
                    notification=True, lot_id=body.lot_id, remaining=body.remaining,
                    expires_at=body.expires_at)  # fmt: skip


async def reservation_rejected(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, lc.ReservationRejected)
    if body.job_id is not None:
        row = {"job_id": body.job_id, "user_id": body.user_id, "operation": "unknown", "status": "REJECTED"}
        await store.job_ended(conn, {**row, "at": env.occurred_at})


# -- payments ----------------------------------------------------------------------------------------------


async def payment(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    """A purchase's outcome: the transaction's state, and a line of activity."""
    common = {"id": "", "user_id": "", "type": "CREDIT_PURCHASE", "currency": "USD", "credits": 0, "amount_cents": 0,
              "stripe_payment_intent_id": None, "metadata": {}, "at": env.occurred_at}  # fmt: skip
    match body:
        case pc.PaymentSucceeded() as paid:
            package = PACKAGES.get(paid.package_id or "")
            name = package.name if package else "credits"
            status, kind, message = "COMPLETED", "purchase", f"Bought {name}: {paid.credits} credits"
            extra: dict[str, Any] = {"package_id": paid.package_id}
            description = f"{name} ({paid.credits} credits)"
        case pc.PaymentFailed() as failed:
            status, kind, message = "FAILED", "payment_failed", f"A payment failed: {failed.reason or 'declined'}"
            extra, description = {"failure": failed.reason}, f"{failed.credits} credits"
        case pc.PaymentCancelled() as cancelled:
            status, kind, message = "CANCELLED", "payment_cancelled", "A payment was cancelled"
            extra, description = {}, f"{cancelled.credits} credits"
        case pc.PaymentRefunded() as refunded:
            status, kind = "REFUNDED", "refund"
            message = f"Refunded {refunded.amount_cents / 100:.2f} {refunded.currency}: {refunded.credits} credits back"
            extra = {"refunded_cents": refunded.amount_cents, "credits_clawed_back": refunded.credits}
            description = "refunded"
        case _:
            return
    assert isinstance(body, pc.PaymentSucceeded | pc.PaymentFailed | pc.PaymentCancelled | pc.PaymentRefunded)
    row = {**common, "id": body.transaction_id, "user_id": body.user_id, "status": status, "currency": body.currency,
           "credits": body.credits, "amount_cents": body.amount_cents, "description": description,
           "stripe_payment_intent_id": body.stripe_payment_intent_id, "metadata": extra}  # fmt: skip
    await store.save_transaction(conn, row)
    await _activity(conn, env, body.user_id, kind, message, notification=kind == "payment_failed",
                    transaction_id=body.transaction_id, **extra)  # fmt: skip


async def subscription(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    at = env.occurred_at
    match body:
        case pc.SubscriptionRenewed() as renewed:
            await store.save_subscription(conn, {
                "id": renewed.subscription_id, "user_id": renewed.user_id, "status": "ACTIVE",
                "plan_id": renewed.plan_id, "credits": renewed.credits, "amount_cents": renewed.amount_cents,
                "period_end": renewed.period_end, "at": at,
            })  # fmt: skip
            await store.save_transaction(conn, {
                "id": renewed.transaction_id or renewed.invoice_id, "user_id": renewed.user_id, "type": "SUBSCRIPTION",
                "status": "COMPLETED",
                "currency": renewed.currency, "credits": renewed.credits, "amount_cents": renewed.amount_cents,
                "description": f"Subscription renewal ({renewed.credits} credits)", "stripe_payment_intent_id": None,
                "metadata": {"subscription_id": renewed.subscription_id, "invoice_id": renewed.invoice_id}, "at": at,
            })  # fmt: skip
            await _activity(conn, env, renewed.user_id, "renewal",
                            f"Subscription renewed: {renewed.credits} credits",
                            subscription_id=renewed.subscription_id, credits=renewed.credits)  # fmt: skip
        case pc.SubscriptionPastDue() as due:
            row = {"id": due.subscription_id, "user_id": due.user_id, "plan_id": due.plan_id, "status": "PAST_DUE"}
            await store.save_subscription(conn, {**row, "at": at})
            await _activity(conn, env, due.user_id, "subscription_past_due",
                            "A subscription payment failed: no credits until it is paid", notification=True,
                            subscription_id=due.subscription_id)  # fmt: skip
        case pc.SubscriptionCancelled() as ended:
            row = {"id": ended.subscription_id, "user_id": ended.user_id, "plan_id": ended.plan_id}
            await store.save_subscription(conn, {**row, "status": "CANCELLED", "at": at})
            await _activity(conn, env, ended.user_id, "subscription_cancelled", "Subscription cancelled",
                            subscription_id=ended.subscription_id)  # fmt: skip


async def auto_recharge(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    match body:
        case pc.AutoRechargeSucceeded() as bought:
            await _activity(conn, env, bought.user_id, "auto_recharge",
                            f"Auto-recharge bought {bought.credits} credits", transaction_id=bought.transaction_id,
                            credits=bought.credits)  # fmt: skip
        case pc.AutoRechargeFailed() as failed:
            off = " (auto-recharge is now off)" if failed.disabled else ""
            await _activity(conn, env, failed.user_id, "auto_recharge_failed",
                            f"Auto-recharge bought nothing: {failed.reason}{off}", notification=True,
                            disabled=failed.disabled)  # fmt: skip


# -- media ---------------------------------------------------------------------------------------------------


async def job_requested(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    assert isinstance(body, mc.JobRequested)
    await store.job_requested(conn, {
        "job_id": body.job_id, "user_id": body.user_id, "operation": body.operation,
        "resource_type": body.resource_type, "resource_id": body.resource_id, "cost": body.cost,
        "at": env.occurred_at,
    })  # fmt: skip


async def job_ended(conn: AsyncConnection, env: Envelope, body: EventData, seq: int) -> None:
    extra: dict[str, Any]
    match body:
        case mc.JobCompleted() as done:
            status, extra = "COMPLETED", {"resource_id": done.resource_id, "cost": done.cost}
            message = f"{_OPERATIONS.get(done.operation, done.operation)} done ({done.cost} credits)"
        case mc.JobFailed() as failed:
            status, extra = "FAILED", {}
            message = f"{_OPERATIONS.get(failed.operation, failed.operation)} failed: nothing charged"
        case mc.JobCancelled() as cancelled:
            status, extra = "CANCELLED", {}
            message = f"{_OPERATIONS.get(cancelled.operation, cancelled.operation)} cancelled: nothing charged"
        case _:
            return
    assert isinstance(body, mc.JobCompleted | mc.JobFailed | mc.JobCancelled)
    row = {"job_id": body.job_id, "user_id": body.user_id, "operation": body.operation, "status": status, **extra}
    await store.job_ended(conn, {**row, "at": env.occurred_at})
    await _activity(conn, env, body.user_id, f"job_{status.lower()}", message, job_id=body.job_id,
                    operation=body.operation, **extra)  # fmt: skip


_OPERATIONS = {
    "image_upload": "Image upload",
    "image_transformation": "Image transform",
    "background_removal": "Background removal",
    "image_generation": "Image generation",
    "image_extension": "Image extension",
    "video_processing": "Video processing",
}


HANDLERS: dict[str, Apply] = {
    idc.UserRegistered.type: user_registered,
    idc.UserUpdated.type: user_updated,
    idc.UserDeactivated.type: user_deactivated,
    idc.UserReactivated.type: user_reactivated,
    lc.CreditsGranted.type: credits_moved,
    lc.CreditsDebited.type: credits_moved,
    lc.CreditsExpired.type: credits_expired,
    lc.CreditsCaptured.type: credits_moved,
    lc.CreditsReserved.type: hold_changed,
    lc.CreditsReleased.type: hold_changed,
    lc.ReservationRejected.type: reservation_rejected,
    lc.BalanceLow.type: balance_low,
    lc.CreditsExpiring.type: credits_expiring,
    pc.PaymentSucceeded.type: payment,
    pc.PaymentFailed.type: payment,
    pc.PaymentCancelled.type: payment,
    pc.PaymentRefunded.type: payment,
    pc.SubscriptionRenewed.type: subscription,
    pc.SubscriptionPastDue.type: subscription,
    pc.SubscriptionCancelled.type: subscription,
    pc.AutoRechargeSucceeded.type: auto_recharge,
    pc.AutoRechargeFailed.type: auto_recharge,
    mc.JobRequested.type: job_requested,
    mc.JobCompleted.type: job_ended,
    mc.JobFailed.type: job_ended,
    mc.JobCancelled.type: job_ended,
}


async def apply_events(
    conn: AsyncConnection, durable: str, stream: str, events: Sequence[tuple[Envelope, int]]
) -> set[str]:
    """Apply events of `stream` as consumer `durable` in the caller's transaction: each effect once (the
    inbox), then the position. The users whose read models changed."""
    changed: set[str] = set()
    for envelope, seq in events:
        handler = HANDLERS.get(envelope.type)
        if await first_delivery(conn, durable, envelope.id) and handler is not None:
            await handler(conn, envelope, envelope.body(), seq)
            changed.update([envelope.user_id] if envelope.user_id else [])
    await store.record_position(conn, durable, stream, max(seq for _, seq in events))
    return changed


def subscriptions(pool: AsyncConnectionPool, on_change: Callable[[str], None]) -> list[Subscription]:
    def consumer(stream: str, durable: str, subjects: tuple[str, ...]) -> Subscription:
        async def apply_all(events: Sequence[tuple[Envelope, int]]) -> None:
            async with pool.connection() as conn, conn.transaction():
                await store.lock_apply(conn, exclusive=False)  # a replay's swap waits for this batch
                changed = await apply_events(conn, durable, stream, events)
            for user_id in changed:
                on_change(user_id)

        async def apply(envelope: Envelope, seq: int) -> None:
            await apply_all([(envelope, seq)])

        return Subscription(stream, durable, subjects, apply, apply_all)

    return [consumer(stream, durable, tuple(STREAMS[stream])) for stream, durable in CONSUMERS]


# The read models' durable consumers: (stream, durable); each applies the whole of its stream.
CONSUMERS = (
    ("IDENTITY", "projections-identity"),
    ("LEDGER", "projections-ledger"),
    ("PAYMENTS", "projections-payments"),
    ("MEDIA", "projections-media"),
)
