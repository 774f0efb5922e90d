"""A stored account event, as the world outside the ledger sees it: the answer to the command that
caused it (HTTP and NATS request/reply alike), a credit-log entry, and its contract on the LEDGER stream.

An answer is built from the stored event alone, never from the account's current state, so a retried
command gets byte-for-byte the answer its first attempt got.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.ledger import events
from services.ledger.application import AnyEvent, ConcurrencyError, Result
from services.ledger.domain import CreditAccount
from services.ledger.values import (
    AccountInactiveError,
    AccountNotFoundError,
    HeldForJobError,
    IdempotencyConflictError,
    InvalidCommandError,
    ReservationNotFoundError,
)
from shared.contracts import Envelope, EventData, derive_id
from shared.contracts import ledger as contracts
from shared.contracts.ledger import credit_entry
from shared.problems import problem_body

ERROR_STATUS: dict[type[Exception], int] = {
    InvalidCommandError: 422,
    IdempotencyConflictError: 409,
    HeldForJobError: 409,
    AccountInactiveError: 403,
    ReservationNotFoundError: 404,
    AccountNotFoundError: 404,
    ConcurrencyError: 503,
}
HoldEvent = CreditAccount.Reserved | CreditAccount.Captured | CreditAccount.Released


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


def problem(status: int, detail: str, **extra: Any) -> Answer:
    return Answer(status, problem_body(status, detail, **extra))


def answer(result: Result | Exception) -> Answer:
    if isinstance(result, Exception):
        status = next((s for t, s in ERROR_STATUS.items() if isinstance(result, t)), None)
        if status is None:
            raise result
        return problem(status, str(result))
    replayed = result.replayed
    match result.event:
        case CreditAccount.Granted() | CreditAccount.Debited() | CreditAccount.Expired() as event:
            return Answer(201, entry(event), replayed)
        case CreditAccount.DebitRejected() | CreditAccount.ReservationRejected() as refused:
            return Answer(402, refusal(refused), replayed)
        case CreditAccount.Reserved() as reserved:
            return Answer(201, hold(reserved, expires_at=reserved.expires_at), replayed)
        case CreditAccount.Captured() as captured:
            return Answer(200, hold(captured, captured=captured.amount, released=captured.released), replayed)
        case CreditAccount.Released() as released:
            return Answer(200, hold(released, captured=0, released=released.amount, reason=released.reason), replayed)
        case CreditAccount.Noted() as noted:
            return Answer(200, {"id": str(event_id(noted)), "noted": noted.reason}, replayed)
        case other:
            return Answer(200, {"id": str(event_id(other)), "noted": type(other).__name__}, replayed)


def refusal(refused: events.Refused) -> dict[str, Any]:
    """A 402 that says whose credit was short: `account` is "org" when an organization's member asked of its
    account, "user" for one's own; `limit` (with what was `used` of it) when it was the member's monthly limit."""
    account = "user" if refused.member_id is None else "org"
    if refused.limit is not None and refused.reason == "usage cap":
        detail = (
            f"{refused.amount} credits asked: this account's monthly cap is {refused.limit},"
            f" {refused.used} of it used or held this month."
        )
        extra: dict[str, Any] = {"reason": "cap", "cap": refused.limit, "used": refused.used}
    elif refused.limit is not None:
        detail = (
            f"{refused.amount} credits asked: your monthly limit in this organization is {refused.limit},"
            f" {refused.used} of it used or held."
        )
        extra = {"reason": "limit", "limit": refused.limit, "used": refused.used}
    else:
        whose = "the organization's" if account == "org" else "your"
        detail = f"{refused.amount} credits asked, {refused.available} available in {whose} account."
        extra = {"reason": "credits"}
    return problem_body(
        402, detail, balance=refused.balance_after, available=refused.available, amount=refused.amount,
        account=account, **extra,
    )  # fmt: skip


def event_id(event: AnyEvent) -> Any:
    """The id the event also carries on the LEDGER stream."""
    return derive_id("ledger", event.originator_id, event.originator_version)


def entry(event: AnyEvent) -> dict[str, Any]:
    """The event's credit-log line (shared/contracts/ledger.py says what it is), as the API answers it."""
    contract = to_contract(event)
    line = credit_entry(contract) if contract is not None else None
    if line is None or not isinstance(event, events.BalanceChanged | CreditAccount.Captured):
        raise TypeError(f"{type(event).__name__} is not a credit-log entry")
    return {
        "id": str(event_id(event)),
        "user_id": str(event.originator_id),
        "version": event.originator_version,
        "type": line.entry_type,
        "amount": line.amount,
        "balance_after": line.balance_after,
        "shortfall": event.shortfall if isinstance(event, CreditAccount.Debited) else 0,
        "description": line.description,
        "metadata": line.metadata,
        "member_id": line.member_id,
        "idempotency_key": event.idempotency_key.removeprefix("client:"),
        "created_at": event.timestamp.isoformat(),
    }


def is_entry(event: AnyEvent, types: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether the event changed the balance (so belongs in the credit log), of one of `types`."""
    match event:
        case CreditAccount.Captured():
            return event.amount > 0 and (not types or "USAGE" in types)
        case events.BalanceChanged():
            return not types or event.entry_type in types
        case _:
            return False


def hold(event: HoldEvent, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(event_id(event)),
        "reservation_id": event.reservation_id,
        "user_id": str(event.originator_id),
        "job_id": event.job_id,
        "amount": event.amount,
        "balance": event.balance_after,
        "reserved": event.reserved_after,
        "available": event.balance_after - event.reserved_after,
        "created_at": event.timestamp.isoformat(),
        **extra,
    }


# The account events that go on the LEDGER stream: the ones to_contract gives a contract.
STREAMED_EVENTS = (
    CreditAccount.Granted,
    CreditAccount.Debited,
    CreditAccount.Expired,
    CreditAccount.DebitRejected,
    CreditAccount.Reserved,
    CreditAccount.ReservationRejected,
    CreditAccount.Captured,
    CreditAccount.Released,
    CreditAccount.BalanceLow,
    CreditAccount.ExpiringSoon,
    CreditAccount.MemberLimitSet,
    CreditAccount.UsageCapSet,
)


def to_contract(event: AnyEvent) -> EventData | None:
    """The public contract of a stored account event, or None for one that stays inside the ledger."""
    match event:
        case CreditAccount.Granted():
            expires_at = datetime.fromisoformat(event.expires_at) if event.expires_at else None
            return contracts.CreditsGranted(
                **_entry_fields(event),
                expires_at=expires_at,
                lot_id=str(event.originator_version),
                value_cents=event.value_cents,
                currency=event.currency,
            )
        case CreditAccount.Expired():
            return contracts.CreditsExpired(
                **_entry_fields(event), lot_id=event.lot_id, expires_at=datetime.fromisoformat(event.expires_at)
            )
        case CreditAccount.Debited():
            return contracts.CreditsDebited(
                **_entry_fields(event), shortfall=event.shortfall, lots=event.lots, member_id=event.member_id
            )
        case CreditAccount.DebitRejected():
            return contracts.DebitRejected(**_stamp(event), **_refused_fields(event))
        case CreditAccount.Reserved():
            return contracts.CreditsReserved(
                **_hold_fields(event), expires_at=datetime.fromisoformat(event.expires_at), balance=event.balance_after,
                reserved_after=event.reserved_after, member_id=event.member_id,
            )  # fmt: skip
        case CreditAccount.ReservationRejected():
            return contracts.ReservationRejected(**{**_hold_fields(event), **_refused_fields(event)})
        case CreditAccount.Captured():
            return contracts.CreditsCaptured(
                **_hold_fields(event), released=event.released, balance_after=event.balance_after,
                reserved_after=event.reserved_after, description=event.description, lots=event.lots,
                member_id=event.member_id,
            )  # fmt: skip
        case CreditAccount.UsageCapSet():
            return contracts.UsageCapSet(**_stamp(event), monthly_credits=event.monthly_credits, set_by=event.set_by)
        case CreditAccount.MemberLimitSet():
            return contracts.MemberLimitSet(
                **_stamp(event), member_id=event.member_id, monthly_credits=event.monthly_credits,
                admin_id=event.admin_id,
            )  # fmt: skip
        case CreditAccount.Released():
            return contracts.CreditsReleased(
                **_hold_fields(event), reason=event.reason, balance=event.balance_after,
                reserved_after=event.reserved_after,
            )  # fmt: skip
        case CreditAccount.BalanceLow():
            return contracts.BalanceLow(
                **_stamp(event), available=event.available, threshold=event.threshold,
                recharge_threshold=event.recharge_threshold,
            )  # fmt: skip
        case CreditAccount.ExpiringSoon():
            return contracts.CreditsExpiring(
                **_stamp(event), lot_id=event.lot_id, remaining=event.remaining,
                expires_at=datetime.fromisoformat(event.expires_at),
            )  # fmt: skip
        case _:  # Opened, Noted, Deactivated, Reactivated, idempotency records
            return None


def to_envelope(event: AnyEvent) -> Envelope | None:
    body = to_contract(event)
    if body is None or not isinstance(event, events.Stamped):
        return None
    stream_id = event_id(event)
    correlation_id = event.correlation_id or str(stream_id)
    cause_id = event.cause_id
    return Envelope.wrap(
        body,
        user_id=str(event.originator_id),
        event_id=stream_id,
        occurred_at=event.timestamp,
        correlation_id=correlation_id,
        causation_id=cause_id,
    )


def _stamp(event: events.Stamped) -> dict[str, Any]:
    return {"user_id": str(event.originator_id), "idempotency_key": event.idempotency_key, "cause_id": event.cause_id}


def _refused_fields(event: events.Refused) -> dict[str, Any]:
    return {
        "amount": event.amount, "available": event.available, "balance": event.balance_after, "reason": event.reason,
        "member_id": event.member_id, "limit": event.limit, "used": event.used,
    }  # fmt: skip


def _entry_fields(event: events.BalanceChanged) -> dict[str, Any]:
    reserved = event.reserved_after
    return {
        **_stamp(event),
        "entry_type": event.entry_type,
        "amount": event.amount,
        "balance_after": event.balance_after,
        "available_after": None if reserved is None else event.balance_after - reserved,
        "description": event.description,
        "metadata": event.metadata,
    }


def _hold_fields(event: HoldEvent | CreditAccount.ReservationRejected) -> dict[str, Any]:
    return {**_stamp(event), "reservation_id": event.reservation_id, "job_id": event.job_id, "amount": event.amount}
