"""Inbound contract events → ledger commands. Each command's key is derived from the causing event
(`payment:<transaction>`, `job:<job>:reserve`), so the account's own history is the inbox: a
redelivered event finds its first outcome and does nothing. Events that arrive out of order are
settled by asking which of their siblings' keys the account has already seen."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from services.ledger.application import Command, Seen
from services.ledger.commands import fingerprint, reservation_id
from services.ledger.dispatch import Dispatcher
from services.ledger.domain import CreditAccount, LedgerError
from shared.bus import Subscription
from shared.contracts import Envelope
from shared.contracts import identity as idc
from shared.contracts import media as mc
from shared.contracts import payments as pc
from shared.credits import WELCOME_BONUS

Build = Callable[[Envelope, int], Command]
# One welcome bonus per account, whichever registration event delivers it and however often.
WELCOME_KEY = "bonus:welcome"


def _ids(envelope: Envelope) -> dict[str, str]:
    return {"cause_id": str(envelope.id), "correlation_id": envelope.correlation_id}


def user_registered(envelope: Envelope, _ttl: int) -> Command:
    body = envelope.body()
    assert isinstance(body, idc.UserRegistered)

    def act(a: CreditAccount, seen: Seen) -> None:
        a.grant(
            entry_type="BONUS",
            amount=WELCOME_BONUS,
            key=WELCOME_KEY,
            fingerprint=WELCOME_KEY,
            description="Welcome bonus",
            metadata={},
            **_ids(envelope),
        )

    return Command(body.user_id, WELCOME_KEY, WELCOME_KEY, act)


def user_status(envelope: Envelope, _ttl: int) -> Command:
    body = envelope.body()
    assert isinstance(body, idc.UserDeactivated | idc.UserReactivated)
    active = isinstance(body, idc.UserReactivated)
    key, fp = f"status:{envelope.id}", fingerprint("status", active=active, at=envelope.occurred_at)

    def act(a: CreditAccount, seen: Seen) -> None:
        a.set_active(active=active, at=envelope.occurred_at, key=key, fingerprint=fp, cause_id=str(envelope.id))

    return Command(body.user_id, key, fp, act)


def payment_succeeded(envelope: Envelope, _ttl: int) -> Command:
    body = envelope.body()
    assert isinstance(body, pc.PaymentSucceeded)
    key, fp = f"payment:{body.transaction_id}", fingerprint("purchase", credits=body.credits)
    metadata = {"transaction_id": body.transaction_id, "package_id": body.package_id, "amount_cents": body.amount_cents}

    def act(a: CreditAccount, seen: Seen) -> None:
        if seen(f"refund:{body.transaction_id}") or body.credits == 0:
            # Its refund came first and took nothing: granting now would give away refunded credits.
            a.note(reason="purchase refunded before it was granted", key=key, fingerprint=fp, cause_id=str(envelope.id))
            return
        a.grant(
            entry_type="PURCHASE",
            amount=body.credits,
            key=key,
            fingerprint=fp,
            description=f"Purchase of {body.credits} credits",
            metadata=metadata,
            **_ids(envelope),
        )

    return Command(body.user_id, key, fp, act)


def payment_refunded(envelope: Envelope, _ttl: int) -> Command:
    body = envelope.body()
    assert isinstance(body, pc.PaymentRefunded)
    key, fp = f"refund:{body.transaction_id}", fingerprint("refund", credits=body.credits)

    def act(a: CreditAccount, seen: Seen) -> None:
        if not seen(f"payment:{body.transaction_id}") or body.credits == 0:
            a.note(reason="refund before its purchase was granted", key=key, fingerprint=fp, cause_id=str(envelope.id))
            return
        a.claw_back(
            amount=body.credits,
            key=key,
            fingerprint=fp,
            description=f"Refund of {body.credits} purchased credits",
            metadata={"transaction_id": body.transaction_id, "stripe_charge_id": body.stripe_charge_id},
            **_ids(envelope),
        )

    return Command(body.user_id, key, fp, act)


def subscription_renewed(envelope: Envelope, _ttl: int) -> Command:
    body = envelope.body()
    assert isinstance(body, pc.SubscriptionRenewed)
    key, fp = f"subscription:{body.subscription_id}:{body.invoice_id}", fingerprint("renewal", credits=body.credits)
    metadata = {"subscription_id": body.subscription_id, "invoice_id": body.invoice_id}

    def act(a: CreditAccount, seen: Seen) -> None:
        a.grant(
            entry_type="PURCHASE",
            amount=body.credits,
            key=key,
            fingerprint=fp,
            description=f"Subscription: {body.credits} credits",
            metadata=metadata,
            **_ids(envelope),
        )

    return Command(body.user_id, key, fp, act)


def _settled(seen: Seen, job_id: str) -> bool:
    return seen(f"job:{job_id}:capture") or seen(f"job:{job_id}:release")


def job_requested(envelope: Envelope, ttl: int) -> Command:
    body = envelope.body()
    assert isinstance(body, mc.JobRequested)
    key, fp = f"job:{body.job_id}:reserve", fingerprint("job-reserve", cost=body.cost)
    rid, ids = reservation_id(body.user_id, key), _ids(envelope)
    expires_at = datetime.fromtimestamp(datetime.now(UTC).timestamp() + ttl, UTC)

    def act(a: CreditAccount, seen: Seen) -> None:
        hold = {"reservation_id": rid, "amount": body.cost, "job_id": body.job_id, "key": key, "fingerprint": fp}
        if _settled(seen, body.job_id):
            a.note(reason="job settled before its hold was asked", key=key, fingerprint=fp, cause_id=ids["cause_id"])
        elif not a.active:
            a.refuse_reservation(reason="account deactivated", **hold, **ids)
        else:
            a.reserve(expires_at=expires_at, **hold, **ids)

    return Command(body.user_id, key, fp, act)


def job_completed(envelope: Envelope, _ttl: int) -> Command:
    body = envelope.body()
    assert isinstance(body, mc.JobCompleted)
    key, fp = f"job:{body.job_id}:capture", fingerprint("job-capture", cost=body.cost)
    ids = _ids(envelope)
    description = f"{body.operation} ({body.job_id})"

    def act(a: CreditAccount, seen: Seen) -> None:
        rid = a.reservation_for_job(body.job_id)
        if rid is not None:
            taken = min(body.cost, int(a.reservations[rid][0]))
            a.capture(reservation_id=rid, amount=taken, description=description, key=key, fingerprint=fp, **ids)
        elif body.cost > 0 and a.active:
            # No hold (it expired, or the completion overtook the request): charge the work now, whole
            # or refused; a refusal goes on the stream as ledger.debit.rejected for operators to see.
            metadata = {"job_id": body.job_id, "operation": body.operation}
            a.debit(
                entry_type="USAGE",
                amount=body.cost,
                key=key,
                fingerprint=fp,
                description=description,
                metadata=metadata,
                **ids,
            )
        else:
            a.note(reason="nothing to capture", key=key, fingerprint=fp, cause_id=ids["cause_id"])

    return Command(body.user_id, key, fp, act)


def job_ended(envelope: Envelope, _ttl: int) -> Command:
    body = envelope.body()
    assert isinstance(body, mc.JobFailed | mc.JobCancelled)
    # Failed and cancelled share a key: whichever comes first releases, the other is a retry.
    key, fp = f"job:{body.job_id}:release", fingerprint("job-release")
    reason = body.reason if isinstance(body, mc.JobFailed) else "cancelled"
    ids = _ids(envelope)

    def act(a: CreditAccount, seen: Seen) -> None:
        rid = a.reservation_for_job(body.job_id)
        if rid is None:
            a.note(reason="nothing held", key=key, fingerprint=fp, cause_id=ids["cause_id"])
        else:
            a.release(reservation_id=rid, reason=reason, key=key, fingerprint=fp, **ids)

    return Command(body.user_id, key, fp, act)


HANDLERS: dict[str, Build] = {
    idc.UserRegistered.type: user_registered,
    idc.UserDeactivated.type: user_status,
    idc.UserReactivated.type: user_status,
    pc.PaymentSucceeded.type: payment_succeeded,
    pc.PaymentRefunded.type: payment_refunded,
    pc.SubscriptionRenewed.type: subscription_renewed,
    mc.JobRequested.type: job_requested,
    mc.JobCompleted.type: job_completed,
    mc.JobFailed.type: job_ended,
    mc.JobCancelled.type: job_ended,
}


async def handle(dispatcher: Dispatcher, envelope: Envelope, ttl_seconds: int) -> None:
    """Apply one event; a refusal here is a bad event, raised so the consumer dead-letters it."""
    build = HANDLERS.get(envelope.type)
    if build is None:
        return
    result = await dispatcher.submit(build(envelope, ttl_seconds))
    if isinstance(result, LedgerError):
        raise result


def subscriptions(dispatcher: Dispatcher, ttl_seconds: int) -> list[Subscription]:
    async def on_event(envelope: Envelope, _seq: int) -> None:
        await handle(dispatcher, envelope, ttl_seconds)

    def by_stream(prefix: str) -> tuple[str, ...]:
        return tuple(t for t in HANDLERS if t.startswith(prefix))

    return [
        Subscription("IDENTITY", "ledger-identity", by_stream("identity."), on_event),
        Subscription("PAYMENTS", "ledger-payments", by_stream("payments."), on_event),
        Subscription("MEDIA", "ledger-media", by_stream("media."), on_event),
    ]
