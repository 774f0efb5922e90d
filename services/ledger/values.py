"""What the ledger's rules are made of besides the account itself: its errors, the stamp every command
carries, holds and lots, and the arithmetic of spending order. Pure: stdlib only."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

GRANT_TYPES = frozenset({"PURCHASE", "BONUS", "REFUND", "ADMIN_ADJUSTMENT"})
DEBIT_TYPES = frozenset({"USAGE", "ADMIN_ADJUSTMENT", "REFUND"})
Portions = dict[str, int]  # credits taken from (or set aside in) each lot, by lot id


class LedgerError(Exception):
    pass


class InvalidCommandError(LedgerError):
    pass


class IdempotencyConflictError(LedgerError):
    """The key was used before for a different request."""


class AccountInactiveError(LedgerError):
    pass


class ReservationNotFoundError(LedgerError):
    pass


class HeldForJobError(LedgerError):
    """The hold is a media job's: only that job's own events settle it."""


class AccountNotFoundError(LedgerError):
    pass


@dataclass(frozen=True)
class Stamp:
    """Under which idempotency key a command runs, what it meant, and what caused it (the request or
    event, and the trace it was part of, so the stream can carry that trace on)."""

    key: str
    fingerprint: str
    cause_id: str | None = None
    correlation_id: str | None = None
    traceparent: str | None = None

    def recorded(self) -> dict[str, Any]:
        """The stamp as every account event records it."""
        return {
            "idempotency_key": self.key,
            "fingerprint": self.fingerprint,
            "cause_id": self.cause_id,
            "correlation_id": self.correlation_id,
            "traceparent": self.traceparent,
        }


@dataclass(frozen=True)
class Hold:
    """Credits set aside for a job until it is captured, released or expires, and the lots they
    were set aside from (a hold keeps its lots: expiry never takes what a hold has reserved)."""

    amount: int
    job_id: str | None
    expires_at: datetime
    lots: dict[str, int] = field(default_factory=dict)
    member_id: str | None = None  # the organization's member who placed it (their limit counts it)


@dataclass(frozen=True)
class Lot:
    """Credit from one grant: what it gave, what is left of it (spent last when it never expires)."""

    source: str  # the idempotency key of the grant, so a refund finds the lot its purchase made
    amount: int
    remaining: int
    expires_at: datetime | None

    def order(self, lot_id: str) -> tuple[bool, datetime, int]:
        """The spending order: soonest expiry first, non-expiring last, older first among equals."""
        return (self.expires_at is None, self.expires_at or datetime.max.replace(tzinfo=UTC), int(lot_id))


@dataclass(frozen=True)
class Allowance:
    """What may be spent in a calendar month (UTC) and what was spent in `month` (YYYY-MM): a member's of an
    organization's account (their limit), or the account's own (its owner's cap); None: no bound. What is held
    counts against it too (the account adds it)."""

    limit: int | None = None
    month: str | None = None
    used: int = 0

    def used_in(self, month: str) -> int:
        return self.used if self.month == month else 0

    def spent(self, month: str, amount: int) -> Allowance:
        return replace(self, month=month, used=self.used_in(month) + amount)


def month_of(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m")


def check_positive(amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise InvalidCommandError("amount must be a positive integer")


def in_spending_order(available: Portions, amount: int, lots: dict[str, Lot]) -> Portions:
    """`amount` taken from `available` (credits by lot id) in the lots' spending order."""
    taken: Portions = {}
    for lot_id in sorted(available, key=lambda i: lots[i].order(i)):
        if amount <= 0:
            break
        part = min(amount, available[lot_id])
        if part > 0:
            taken[lot_id] = part
            amount -= part
    return taken


def reservation_expiry(now: datetime, ttl_seconds: int) -> datetime:
    return now + timedelta(seconds=ttl_seconds)
