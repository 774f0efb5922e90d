"""Inbound contract events → ledger commands; translation only (the rules are the account's).

Each command's key is derived from the causing event (`payment:<transaction>`, `job:<job>:reserve`),
so the account's own history is the inbox: a redelivered event finds its first outcome and does
nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.ledger.commands import (
    ORG_OPENED_KEY,
    WELCOME_KEY,
    ChargeJob,
    Command,
    EndJob,
    Grant,
    HoldForJob,
    OpenOrganization,
    Purchase,
    Refund,
    Renewal,
    SetRechargeThreshold,
    SetStatus,
    Welcome,
    job_key,
    payment_key,
    promo_grant_key,
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

ORGANIZATION_EVENTS = (idc.OrganizationCreated, idc.OrganizationDeleted)
# Every event the ledger acts on, by the stream it comes from.
SUBSCRIBED: dict[str, tuple[type[EventData], ...]] = {
    "IDENTITY": (idc.UserRegistered, idc.UserDeactivated, idc.UserReactivated, *ORGANIZATION_EVENTS),
    "PAYMENTS": (
        pc.PaymentSucceeded,
        pc.PaymentRefunded,
        pc.SubscriptionRenewed,
        pc.AutoRechargeConfigured,
        pc.PromoRedeemed,
    ),
    "MEDIA": (mc.JobRequested, mc.JobCompleted, mc.JobFailed, mc.JobCancelled),
}


def to_command(envelope: Envelope, ttl_seconds: int) -> Command | None:
    caused: dict[str, Any] = {"cause_id": str(envelope.id), "correlation_id": envelope.correlation_id}
    match envelope.body():
        case idc.UserRegistered(user_id=user):
            return Welcome(user_id=user, key=WELCOME_KEY, **caused)
        case idc.OrganizationCreated(account_id=account):
            return OpenOrganization(user_id=account, key=ORG_OPENED_KEY, **caused)
        case idc.OrganizationDeleted(account_id=account):
            return SetStatus(user_id=account, key=f"status:{envelope.id}", active=False, at=envelope.occurred_at,
                             **caused)  # fmt: skip
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
                credits=paid.credits, package_id=paid.package_id, amount_cents=paid.amount_cents,
                currency=paid.currency, **caused,
            )  # fmt: skip
        case pc.PaymentRefunded() as refunded:
            return Refund(
                user_id=refunded.user_id, key=refund_key(refunded.transaction_id),
                transaction_id=refunded.transaction_id, credits=refunded.credits_clawed_back,
                stripe_charge_id=refunded.stripe_charge_id, **caused,
            )  # fmt: skip
        case pc.PromoRedeemed() as promo:
            return Grant(
                user_id=promo.user_id, key=promo_grant_key(promo.code), entry_type="BONUS", amount=promo.credits,
                description=f"Promo code {promo.code}", expires_at=promo.expires_at,
                metadata={"promo_code": promo.code, "redemption_id": promo.redemption_id}, **caused,
            )  # fmt: skip
        case pc.SubscriptionRenewed() as renewed:
            key = f"subscription:{renewed.subscription_id}:{renewed.invoice_id}"
            return Renewal(
                user_id=renewed.user_id, key=key, subscription_id=renewed.subscription_id,
                invoice_id=renewed.invoice_id, credits=renewed.credits,
                expires_at=None if renewed.rolls_over else renewed.period_end, amount_cents=renewed.amount_cents,
                currency=renewed.currency, **caused,
            )  # fmt: skip
        case mc.JobRequested() as job:
            key = job_key(job.job_id, "reserve")
            account, member = _payer(job)
            return HoldForJob(
                user_id=account, key=key, reservation_id=reservation_id(account, key), job_id=job.job_id,
                cost=job.cost, expires_at=reservation_expiry(datetime.now(UTC), job.hold_seconds or ttl_seconds),
                member_id=member, **caused,
            )  # fmt: skip
        case mc.JobCompleted() as job:
            key = job_key(job.job_id, "capture")
            account, member = _payer(job)
            return ChargeJob(
                user_id=account, key=key, job_id=job.job_id, cost=job.cost, operation=job.operation, member_id=member,
                **caused,
            )  # fmt: skip
        case mc.JobFailed() | mc.JobCancelled() as job:
            reason = job.reason if isinstance(job, mc.JobFailed) else "cancelled"
            return EndJob(user_id=_payer(job)[0], key=job_key(job.job_id, "release"), job_id=job.job_id,
                          reason=reason, **caused)  # fmt: skip
        case _:
            return None


def _payer(job: mc.JobRequested | mc.JobCompleted | mc.JobFailed | mc.JobCancelled) -> tuple[str, str | None]:
    """Whose account pays for a job, and which of an organization's members asked (their limit applies)."""
    if job.account_id is None or job.account_id == job.user_id:
        return job.user_id, None
    return job.account_id, job.user_id


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
