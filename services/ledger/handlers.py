"""Inbound contract events → ledger commands; translation only (the rules are the account's).

Each command's key is derived from the causing event (`payment:<transaction>`, `job:<job>:reserve`),
so the account's own history is the inbox: a redelivered event finds its first outcome and does
nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.ledger.commands import (
    WELCOME_KEY,
    ChargeJob,
    Command,
    EndJob,
    HoldForJob,
    Purchase,
    Refund,
    Renewal,
    SetRechargeThreshold,
    SetStatus,
    Welcome,
    job_key,
    payment_key,
    refund_key,
    reservation_id,
)
from services.ledger.unit_of_work import UnitOfWork
from services.ledger.values import LedgerError, reservation_expiry
from shared.bus import Subscription
from shared.contracts import Envelope, EventData
from shared.contracts import identity as idc
from shared.contracts import media as mc
from shared.contracts import payments as pc

# Every event the ledger acts on, by the stream it comes from.
SUBSCRIBED: dict[str, tuple[type[EventData], ...]] = {
    "IDENTITY": (idc.UserRegistered, idc.UserDeactivated, idc.UserReactivated),
    "PAYMENTS": (pc.PaymentSucceeded, pc.PaymentRefunded, pc.SubscriptionRenewed, pc.AutoRechargeConfigured),
    "MEDIA": (mc.JobRequested, mc.JobCompleted, mc.JobFailed, mc.JobCancelled),
}


def to_command(envelope: Envelope, ttl_seconds: int) -> Command | None:
    caused = {"cause_id": str(envelope.id), "correlation_id": envelope.correlation_id}
    match envelope.body():
        case idc.UserRegistered(user_id=user):
            return Welcome(user_id=user, key=WELCOME_KEY, **caused)
        case idc.UserDeactivated(user_id=user) | idc.UserReactivated(user_id=user) as status:
            active = isinstance(status, idc.UserReactivated)
            key = f"status:{envelope.id}"
            return SetStatus(user_id=user, key=key, active=active, at=envelope.occurred_at, **caused)
        case pc.AutoRechargeConfigured() as configured:
            key = f"recharge:{envelope.id}"
            return SetRechargeThreshold(
                user_id=configured.user_id, key=key, threshold=configured.threshold, at=configured.at, **caused
            )
        case pc.PaymentSucceeded() as paid:
            return Purchase(
                user_id=paid.user_id, key=payment_key(paid.transaction_id), transaction_id=paid.transaction_id,
                credits=paid.credits, package_id=paid.package_id, amount_cents=paid.amount_cents, **caused,
            )  # fmt: skip
        case pc.PaymentRefunded() as refunded:
            return Refund(
                user_id=refunded.user_id, key=refund_key(refunded.transaction_id),
                transaction_id=refunded.transaction_id, credits=refunded.credits_clawed_back,
                stripe_charge_id=refunded.stripe_charge_id, **caused,
            )  # fmt: skip
        case pc.SubscriptionRenewed() as renewed:
            key = f"subscription:{renewed.subscription_id}:{renewed.invoice_id}"
            return Renewal(
                user_id=renewed.user_id, key=key, subscription_id=renewed.subscription_id,
                invoice_id=renewed.invoice_id, credits=renewed.credits,
                expires_at=None if renewed.rolls_over else renewed.period_end, **caused,
            )  # fmt: skip
        case mc.JobRequested() as job:
            key = job_key(job.job_id, "reserve")
            return HoldForJob(
                user_id=job.user_id, key=key, reservation_id=reservation_id(job.user_id, key), job_id=job.job_id,
                cost=job.cost, expires_at=reservation_expiry(datetime.now(UTC), job.hold_seconds or ttl_seconds),
                **caused,
            )  # fmt: skip
        case mc.JobCompleted() as job:
            key = job_key(job.job_id, "capture")
            return ChargeJob(
                user_id=job.user_id, key=key, job_id=job.job_id, cost=job.cost, operation=job.operation, **caused
            )
        case mc.JobFailed() | mc.JobCancelled() as job:
            reason = job.reason if isinstance(job, mc.JobFailed) else "cancelled"
            return EndJob(user_id=job.user_id, key=job_key(job.job_id, "release"), job_id=job.job_id, reason=reason,
                          **caused)  # fmt: skip
        case _:
            return None


async def handle(unit: UnitOfWork, envelope: Envelope, ttl_seconds: int) -> None:
    """Apply one event; a refusal here is a bad event, raised so the consumer dead-letters it."""
    command = to_command(envelope, ttl_seconds)
    if command is None:
        return
    result = await unit.submit(command)
    if isinstance(result, LedgerError):
        raise result


def subscriptions(unit: UnitOfWork, ttl_seconds: int) -> list[Subscription]:
    async def on_event(envelope: Envelope, _seq: int) -> None:
        await handle(unit, envelope, ttl_seconds)

    return [
        Subscription(stream, f"ledger-{stream.lower()}", tuple(t.type for t in types), on_event)
        for stream, types in SUBSCRIBED.items()
    ]
