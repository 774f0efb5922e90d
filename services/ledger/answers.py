"""Outcome → answer (status and JSON body), shared by HTTP and NATS request/reply.

An answer is built from the stored event alone, never from the account's current state, so a
retried command gets byte-for-byte the answer its first attempt got.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.ledger import domain
from services.ledger.application import ConcurrencyError, Result
from shared.contracts import derive_id
from shared.problems import problem_body

ERROR_STATUS: dict[type[Exception], int] = {
    domain.InvalidCommandError: 422,
    domain.IdempotencyConflictError: 409,
    domain.AccountInactiveError: 403,
    domain.ReservationNotFoundError: 404,
    domain.AccountNotFoundError: 404,
    ConcurrencyError: 503,
}


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
    event, replayed = result.event, result.replayed
    name = type(event).__name__
    if name in ("Granted", "Debited"):
        return Answer(201, entry(event), replayed)
    if name in ("DebitRejected", "ReservationRejected"):
        body = problem(
            402,
            f"{event.amount} credits asked, {event.available} available.",
            balance=event.balance_after,
            available=event.available,
            amount=event.amount,
        ).body
        return Answer(402, body, replayed)
    if name == "Reserved":
        return Answer(201, hold(event, expires_at=event.expires_at), replayed)
    if name == "Captured":
        return Answer(200, hold(event, captured=event.amount, released=event.released), replayed)
    if name == "Released":
        return Answer(200, hold(event, captured=0, released=event.amount, reason=event.reason), replayed)
    return Answer(200, {"id": str(event_id(event)), "noted": getattr(event, "reason", name)}, replayed)


def event_id(event: Any) -> Any:
    """The id the event also carries on the LEDGER stream (see relay.to_envelope)."""
    return derive_id("ledger", event.originator_id, event.originator_version)


SIGN = {"Granted": 1, "Debited": -1, "Captured": -1}


def entry(event: Any) -> dict[str, Any]:
    """A credit-log entry: positive amounts added credits, negative ones used them."""
    name = type(event).__name__
    captured = name == "Captured"
    return {
        "id": str(event_id(event)),
        "user_id": str(event.originator_id),
        "version": event.originator_version,
        "type": "USAGE" if captured else event.entry_type,
        "amount": SIGN[name] * event.amount,
        "balance_after": event.balance_after,
        "shortfall": getattr(event, "shortfall", 0),
        "description": event.description,
        "metadata": {"reservation_id": event.reservation_id, "job_id": event.job_id} if captured else event.metadata,
        "idempotency_key": event.idempotency_key.removeprefix("client:"),
        "created_at": event.timestamp.isoformat(),
    }


def is_entry(event: Any, types: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether the event changed the balance (so belongs in the credit log), of one of `types`."""
    name = type(event).__name__
    if name == "Captured":
        return bool(event.amount > 0 and (not types or "USAGE" in types))
    return name in ("Granted", "Debited") and (not types or event.entry_type in types)


def hold(event: Any, **extra: Any) -> dict[str, Any]:
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
