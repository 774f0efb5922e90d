"""Event → read model. Each event's effect, its inbox record and the consumer's stream position are
written in one transaction (a fetched batch of events in one), so a redelivery changes nothing and a
crash loses nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, assert_never, cast, get_args

from fastapi.encoders import jsonable_encoder
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.projections import read_models, store
from shared import finance, metrics
from shared.bus import Subscription
from shared.bus.streams import STREAMS
from shared.contracts import Envelope
from shared.contracts import identity as idc
from shared.contracts import ledger as lc
from shared.contracts import media as mc
from shared.contracts import payments as pc
from shared.credits import PACKAGES
from shared.inbox import first_delivery

# The read models' durable consumers: (stream, durable); each applies the whole of its stream.
CONSUMERS = (
    ("IDENTITY", "projections-identity"),
    ("LEDGER", "projections-ledger"),
    ("PAYMENTS", "projections-payments"),
    ("MEDIA", "projections-media"),
)

# Every event the read models take. The rest of each stream (a refused debit, a configured auto-recharge) is
# recorded as handled and passes unparsed: a replay reads the streams raw, and a message no read model shows
# (one the live consumers parked) must not stop it.
Taken = (
    idc.UserRegistered | idc.UserUpdated | idc.UserDeactivated | idc.UserReactivated | idc.UserErased
    | idc.OrganizationCreated | idc.OrganizationUpdated | idc.OrganizationDeleted
    | idc.MemberAdded | idc.MemberRoleChanged | idc.MemberRemoved | lc.MemberLimitSet | lc.UsageCapSet
    | lc.CreditsGranted | lc.CreditsDebited | lc.CreditsExpired | lc.CreditsCaptured | lc.CreditsReserved
    | lc.CreditsReleased | lc.ReservationRejected | lc.BalanceLow | lc.CreditsExpiring
    | pc.PaymentSucceeded | pc.PaymentFailed | pc.PaymentCancelled | pc.PaymentRefunded
    | pc.SubscriptionRenewed | pc.SubscriptionPastDue | pc.SubscriptionCancelled
    | pc.AutoRechargeSucceeded | pc.AutoRechargeFailed
    | mc.JobRequested | mc.JobCompleted | mc.JobFailed | mc.JobCancelled
)  # fmt: skip
TAKEN_TYPES = frozenset(event.type for event in get_args(Taken))

Moved = lc.CreditsGranted | lc.CreditsDebited | lc.CreditsExpired | lc.CreditsCaptured
Payment = pc.PaymentSucceeded | pc.PaymentFailed | pc.PaymentCancelled | pc.PaymentRefunded
JobEnd = mc.JobCompleted | mc.JobFailed | mc.JobCancelled


async def apply(conn: AsyncConnection, env: Envelope, body: Taken, seq: int) -> None:
    """One event's effect on the read models, at stream position `seq`."""
    at = env.occurred_at
    match body:
        case idc.UserRegistered() | idc.UserUpdated() as profile:
            await read_models.upsert_user(conn, {**profile.model_dump(), "at": at, "seq": seq})
        case idc.UserDeactivated(user_id=user):
            await read_models.set_user_active(conn, user, False, seq=seq, at=at)
        case idc.UserReactivated(user_id=user):
            await read_models.set_user_active(conn, user, True, seq=seq, at=at)
        case idc.UserErased(user_id=user):
            await read_models.erase_user(conn, user, at=at)
        case idc.OrganizationCreated() | idc.OrganizationUpdated() as org:
            await read_models.save_organization(conn, {**org.model_dump(), "deleted": False, "seq": seq})
        case idc.OrganizationDeleted() as org:
            row = {**org.model_dump(), "name": org.org_id, "slug": None, "deleted": True, "seq": seq}
            await read_models.save_organization(conn, row)
        case idc.MemberAdded() | idc.MemberRoleChanged() as member:
            await read_models.save_member(conn, {**member.model_dump(), "active": True, "seq": seq})
        case idc.MemberRemoved() as member:
            await read_models.save_member(conn, {**member.model_dump(), "role": None, "active": False, "seq": seq})
        case lc.UsageCapSet() as cap:
            row = {"account_id": cap.user_id, "monthly_credits": cap.monthly_credits, "seq": seq}
            await read_models.set_usage_cap(conn, row)
        case lc.MemberLimitSet() as limit:
            row = {"account_id": limit.user_id, "member_id": limit.member_id,
                   "monthly_credits": limit.monthly_credits, "seq": seq}  # fmt: skip
            await read_models.set_member_limit(conn, row)
        case lc.CreditsExpired() as expired:
            await _credits_moved(conn, env, expired, seq)
            await _activity(conn, env, expired.user_id, "credits_expired", f"{expired.amount} credits expired",
                            lot_id=expired.lot_id, amount=expired.amount)  # fmt: skip
        case lc.CreditsGranted() | lc.CreditsDebited() | lc.CreditsCaptured() as moved:
            await _credits_moved(conn, env, moved, seq)
        case lc.CreditsReserved() | lc.CreditsReleased() as hold:
            figures = await read_models.set_balance(conn, hold.user_id, seq=seq, at=at, reserved=hold.reserved_after)
            await _balance_changed(conn, env, hold.user_id, figures)
        case lc.ReservationRejected(job_id=str(job_id)) as rejected:
            row = {"job_id": job_id, "user_id": rejected.user_id, "operation": "unknown", "status": "REJECTED"}
            await read_models.job_ended(conn, {**row, "at": at})
        case lc.ReservationRejected():
            pass  # a hold asked for without a job: no job to end
        case lc.BalanceLow() as low:
            await _activity(conn, env, low.user_id, "balance_low", f"Your balance is low: {low.available} credits left",
                            notification=True, available=low.available)  # fmt: skip
        case lc.CreditsExpiring() as expiring:
            day = expiring.expires_at.date().isoformat()
            await _activity(conn, env, expiring.user_id, "credits_expiring",
                            f"{expiring.remaining} credits expire on {day}", notification=True,
                            lot_id=expiring.lot_id, remaining=expiring.remaining,
                            expires_at=expiring.expires_at)  # fmt: skip
        case pc.PaymentSucceeded() | pc.PaymentFailed() | pc.PaymentCancelled() | pc.PaymentRefunded() as payment:
            await _payment(conn, env, payment)
        case pc.SubscriptionRenewed() as renewed:
            await _renewal(conn, env, renewed)
        case pc.SubscriptionPastDue() as due:
            row = {"id": due.subscription_id, "user_id": due.user_id, "plan_id": due.plan_id, "status": "PAST_DUE"}
            await read_models.save_subscription(conn, {**row, "at": at})
            await _activity(conn, env, due.user_id, "subscription_past_due",
                            "A subscription payment failed: no credits until it is paid", notification=True,
                            subscription_id=due.subscription_id)  # fmt: skip
        case pc.SubscriptionCancelled() as ended:
            row = {"id": ended.subscription_id, "user_id": ended.user_id, "plan_id": ended.plan_id}
            await read_models.save_subscription(conn, {**row, "status": "CANCELLED", "at": at})
            await _activity(conn, env, ended.user_id, "subscription_cancelled", "Subscription cancelled",
                            subscription_id=ended.subscription_id)  # fmt: skip
        case pc.AutoRechargeSucceeded() as bought:
            await _activity(conn, env, bought.user_id, "auto_recharge",
                            f"Auto-recharge bought {bought.credits} credits", notification=True,
                            transaction_id=bought.transaction_id, credits=bought.credits)  # fmt: skip
        case pc.AutoRechargeFailed() as failed:
            off = " (auto-recharge is now off)" if failed.disabled else ""
            await _activity(conn, env, failed.user_id, "auto_recharge_failed",
                            f"Auto-recharge bought nothing: {failed.reason}{off}", notification=True,
                            disabled=failed.disabled)  # fmt: skip
        case mc.JobRequested() as job:
            await read_models.job_requested(conn, {
                "job_id": job.job_id, "user_id": job.user_id, "operation": job.operation,
                "resource_type": job.resource_type, "resource_id": job.resource_id, "cost": job.cost, "at": at,
            })  # fmt: skip
        case mc.JobCompleted() | mc.JobFailed() | mc.JobCancelled() as job:
            await _job_ended(conn, env, job)
        case _:
            assert_never(body)  # mypy: every event in Taken has its case


async def _credits_moved(conn: AsyncConnection, env: Envelope, body: Moved, seq: int) -> None:
    """A grant, a debit, an expiry or a capture: its credit-log line (if any), its lots, the balance it left."""
    if (line := lc.credit_entry(body)) is not None:
        await read_models.add_entry(
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
                "member_id": line.member_id,
            },
        )
    month = finance_month(env)
    match body:
        case lc.CreditsGranted(lot_id=str(lot_id)):
            await read_models.lot_granted(conn, {"user_id": body.user_id, "lot_id": lot_id, "amount": body.amount,
                                           "expires_at": body.expires_at, "description": body.description,
                                           "at": env.occurred_at})  # fmt: skip
            if body.value_cents:
                await read_models.lot_sold(conn, {
                    "event_id": env.id, "seq": seq, "user_id": body.user_id, "lot_id": lot_id, "month": month,
                    "credits": body.amount, "value_cents": body.value_cents,
                    "currency": body.currency or finance.NO_CURRENCY,
                })  # fmt: skip
        case lc.CreditsDebited(lots=dict(portions)) | lc.CreditsCaptured(lots=dict(portions)):
            await read_models.lots_taken(conn, body.user_id, portions)
            await read_models.value_taken(conn, _spent(env, body, seq, month), portions)
        case lc.CreditsExpired(lot_id=lot_id):
            await read_models.lot_expired(conn, body.user_id, lot_id)
            row = {"event_id": env.id, "seq": seq, "user_id": body.user_id, "month": month, "entry_type": "EXPIRED",
                   "job_id": None, "operation": None}  # fmt: skip
            await read_models.value_taken(conn, row, {lot_id: body.amount})
    # Only a capture says what is held after it: the others leave the holds' figure as it stands.
    reserved = body.reserved_after if isinstance(body, lc.CreditsCaptured) else None
    figures = await read_models.set_balance(
        conn, body.user_id, seq=seq, at=env.occurred_at, balance=body.balance_after, reserved=reserved
    )
    await _balance_changed(conn, env, body.user_id, figures)


def finance_month(env: Envelope) -> str:
    """The month (UTC) a movement of value counts in: when the ledger recorded it."""
    return env.occurred_at.astimezone(UTC).strftime("%Y-%m")


def _spent(env: Envelope, body: lc.CreditsDebited | lc.CreditsCaptured, seq: int, month: str) -> dict[str, Any]:
    """A debit's or capture's movement of value, with the operation it paid for where the ledger says (a job's
    capture names its job: the media job's row names the operation)."""
    if isinstance(body, lc.CreditsCaptured):
        entry_type, job_id, operation = "USAGE", body.job_id, None if body.job_id else "hold"
    else:
        entry_type, job_id = body.entry_type.value, body.metadata.get("job_id")
        operation = body.metadata.get("operation") or ("debit" if entry_type == "USAGE" else entry_type.lower())
    return {"event_id": env.id, "seq": seq, "user_id": body.user_id, "month": month, "entry_type": entry_type,
            "job_id": job_id if isinstance(job_id, str) else None,
            "operation": operation if isinstance(operation, str) else None}  # fmt: skip


async def _balance_changed(conn: AsyncConnection, env: Envelope, user_id: str, figures: tuple[int, int]) -> None:
    """The account's figures as they now stand, for the user's live feed."""
    balance, reserved = figures
    data = {"balance": balance, "reserved": reserved, "available": balance - reserved}
    await read_models.add_to_feed(conn, user_id, "balance", data, env.occurred_at)


async def _activity(
    conn: AsyncConnection, env: Envelope, user_id: str, kind: str, message: str, *, notification: bool = False,
    **data: Any,
) -> None:  # fmt: skip
    await read_models.add_activity(conn, {
        "event_id": env.id, "user_id": user_id, "kind": kind, "notification": notification, "message": message,
        "data": jsonable_encoder(data), "at": env.occurred_at,
    })  # fmt: skip
    if notification:
        note = {"kind": kind, "message": message, "data": jsonable_encoder(data)}
        await read_models.add_to_feed(conn, user_id, "notification", note, env.occurred_at)


async def _payment(conn: AsyncConnection, env: Envelope, body: Payment) -> None:
    """A purchase's outcome: the transaction's state, and a line of activity."""
    extra: dict[str, Any]
    match body:
        case pc.PaymentSucceeded() as paid:
            package = PACKAGES.get(paid.package_id or "")
            name = package.name if package else "credits"
            status, kind, message = "COMPLETED", "purchase", f"Bought {name}: {paid.credits} credits"
            extra = {"package_id": paid.package_id}
            description = f"{name} ({paid.credits} credits)"
        case pc.PaymentFailed() as failed:
            status, kind, message = "FAILED", "payment_failed", f"A payment failed: {failed.reason or 'declined'}"
            extra, description = {"failure": failed.reason}, f"{failed.credits} credits"
        case pc.PaymentCancelled() as cancelled:
            status, kind, message = "CANCELLED", "payment_cancelled", "A payment was cancelled"
            extra, description = {}, f"{cancelled.credits} credits"
        case pc.PaymentRefunded() as refunded:
            status, kind = "REFUNDED", "refund"
            back = f"{refunded.refunded_cents / 100:.2f} {refunded.currency}: {refunded.credits_clawed_back} credits"
            message = f"Refunded {back} back"
            extra = {"refunded_cents": refunded.refunded_cents, "credits_clawed_back": refunded.credits_clawed_back}
            description = "refunded"
    # A refund says nothing of the payment's own amount: its succeeded event does, before or after it.
    credits, cents = (0, 0) if isinstance(body, pc.PaymentRefunded) else (body.credits, body.amount_cents)
    row = {"id": body.transaction_id, "user_id": body.user_id, "type": "CREDIT_PURCHASE", "status": status,
           "currency": body.currency, "credits": credits, "amount_cents": cents,
           "description": description, "stripe_payment_intent_id": body.stripe_payment_intent_id, "metadata": extra,
           "at": env.occurred_at}  # fmt: skip
    await read_models.save_transaction(conn, row)
    await _activity(conn, env, body.user_id, kind, message, notification=kind == "payment_failed",
                    transaction_id=body.transaction_id, **extra)  # fmt: skip


async def _renewal(conn: AsyncConnection, env: Envelope, renewed: pc.SubscriptionRenewed) -> None:
    """A paid period: the subscription's state, its invoice as a transaction, and a line of activity."""
    at = env.occurred_at
    await read_models.save_subscription(conn, {
        "id": renewed.subscription_id, "user_id": renewed.user_id, "status": "ACTIVE",
        "plan_id": renewed.plan_id, "credits": renewed.credits, "amount_cents": renewed.amount_cents,
        "period_end": renewed.period_end, "at": at,
    })  # fmt: skip
    await read_models.save_transaction(conn, {
        "id": renewed.transaction_id or renewed.invoice_id, "user_id": renewed.user_id, "type": "SUBSCRIPTION",
        "status": "COMPLETED",
        "currency": renewed.currency, "credits": renewed.credits, "amount_cents": renewed.amount_cents,
        "description": f"Subscription renewal ({renewed.credits} credits)", "stripe_payment_intent_id": None,
        "metadata": {"subscription_id": renewed.subscription_id, "invoice_id": renewed.invoice_id}, "at": at,
    })  # fmt: skip
    await _activity(conn, env, renewed.user_id, "renewal", f"Subscription renewed: {renewed.credits} credits",
                    subscription_id=renewed.subscription_id, credits=renewed.credits)  # fmt: skip


async def _job_ended(conn: AsyncConnection, env: Envelope, body: JobEnd) -> None:
    """A job's outcome, and a line of activity."""
    extra: dict[str, Any]
    name = _OPERATIONS.get(body.operation, body.operation)
    match body:
        case mc.JobCompleted() as done:
            status, extra = "COMPLETED", {"resource_id": done.resource_id, "cost": done.cost}
            message = f"{name} done ({done.cost} credits)"
        case mc.JobFailed():
            status, extra, message = "FAILED", {}, f"{name} failed: nothing charged"
        case mc.JobCancelled():
            status, extra, message = "CANCELLED", {}, f"{name} cancelled: nothing charged"
    row = {"job_id": body.job_id, "user_id": body.user_id, "operation": body.operation, "status": status, **extra}
    await read_models.job_ended(conn, {**row, "at": env.occurred_at})
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


async def apply_events(
    conn: AsyncConnection, durable: str, stream: str, events: Sequence[tuple[Envelope, int]]
) -> set[str]:
    """Apply events of `stream` as consumer `durable` in the caller's transaction: each effect once (the
    inbox), then the position. The users whose read models changed."""
    changed: set[str] = set()
    for envelope, seq in events:
        if await first_delivery(conn, durable, envelope.id) and envelope.type in TAKEN_TYPES:
            await apply(conn, envelope, cast(Taken, envelope.body()), seq)  # its type is one of Taken's
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

        async def apply_one(envelope: Envelope, seq: int) -> None:
            await apply_all([(envelope, seq)])

        return Subscription(stream, durable, subjects, apply_one, apply_all)

    return [consumer(stream, durable, tuple(STREAMS[stream])) for stream, durable in CONSUMERS]


def lag_sampler(js: JetStreamContext, subscriptions: Sequence[Subscription]) -> Callable[[], Awaitable[None]]:
    """creditstream_projection_lag_seconds{model}: the age of the oldest message a read model's consumer has
    not acknowledged (the next after its ack floor), 0 when it has them all."""

    async def sample() -> None:
        now = datetime.now(UTC)
        for subscription in subscriptions:
            info = await js.consumer_info(subscription.stream, subscription.durable)
            lag = 0.0
            if (info.num_pending or 0) + (info.num_ack_pending or 0) > 0:
                floor = info.ack_floor.stream_seq if info.ack_floor else 0
                with contextlib.suppress(NotFoundError):  # removed from the stream meanwhile: caught up to it
                    oldest = await js.get_msg(subscription.stream, seq=floor + 1, next=True)
                    lag = max(0.0, (now - oldest.time).total_seconds()) if oldest.time else 0.0
            metrics.PROJECTION_LAG.set(lag, {"model": subscription.stream.lower()})

    return sample
