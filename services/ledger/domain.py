"""The credit account: the single source of truth for one user's balance.

Pure domain: stdlib and eventsourcing.domain only. Every command carries an idempotency key, and
every event it produces records that key. Which key produced which event is kept in a small
`IdempotencyRecord` per key, saved in the same transaction as the account's event: the account's own
state (and so its snapshots) stays the size of its open holds, however many commands it has seen.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.domain import Aggregate, event

GRANT_TYPES = frozenset({"PURCHASE", "BONUS", "REFUND", "ADMIN_ADJUSTMENT"})
DEBIT_TYPES = frozenset({"USAGE", "ADMIN_ADJUSTMENT", "REFUND"})


class LedgerError(Exception):
    pass


class InvalidCommandError(LedgerError):
    pass


class InsufficientCreditsError(LedgerError):
    def __init__(self, amount: int, balance: int, available: int) -> None:
        super().__init__(f"{amount} credits asked, {available} available")
        self.amount, self.balance, self.available = amount, balance, available


class IdempotencyConflictError(LedgerError):
    """The key was used before for a different request."""


class AccountInactiveError(LedgerError):
    pass


class ReservationNotFoundError(LedgerError):
    pass


class AccountNotFoundError(LedgerError):
    pass


class IdempotencyRecord(Aggregate):
    """The event an idempotency key produced on an account, and the request it came with."""

    @staticmethod
    def create_id(account_id: uuid.UUID, key: str) -> uuid.UUID:
        return uuid.uuid5(account_id, key)

    @event("Recorded")
    def __init__(self, account_id: uuid.UUID, key: str, fingerprint: str, event_version: int) -> None:
        self.account_id = account_id
        self.key = key
        self.fingerprint = fingerprint
        self.event_version = event_version

    def replay(self, fingerprint: str) -> int:
        """Version of the event to answer with again; the same key for another request is refused."""
        if fingerprint != self.fingerprint:
            raise IdempotencyConflictError(f"idempotency key {self.key!r} was used for a different request")
        return self.event_version


class CreditAccount(Aggregate):
    @staticmethod
    def create_id(user_id: str) -> uuid.UUID:
        return uuid.UUID(user_id)

    @event("Opened")
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.balance = 0
        self.reserved = 0
        self.active = True
        # reservation id -> [amount, job_id, expires_at iso]
        self.reservations: dict[str, list[Any]] = {}
        # When identity last changed the status: status events can arrive out of order.
        self.status_at: str | None = None

    @property
    def available(self) -> int:
        return self.balance - self.reserved

    # -- commands ---------------------------------------------------------------------------------

    def grant(self, *, entry_type: str, amount: int, key: str, fingerprint: str, **details: Any) -> None:
        if entry_type not in GRANT_TYPES:
            raise InvalidCommandError(f"{entry_type} is not a grant type")
        _positive(amount)
        self._granted(
            entry_type=entry_type,
            amount=amount,
            balance_after=self.balance + amount,
            idempotency_key=key,
            fingerprint=fingerprint,
            **_details(details),
        )

    def debit(self, *, entry_type: str, amount: int, key: str, fingerprint: str, **details: Any) -> bool:
        """Debit whole or not at all; a refusal is recorded too, so its retry answers the same."""
        if entry_type not in DEBIT_TYPES:
            raise InvalidCommandError(f"{entry_type} is not a debit type")
        _positive(amount)
        info = _details(details)
        if not self.active:
            raise AccountInactiveError("the account is deactivated")
        if amount > self.available:
            self._debit_rejected(
                amount=amount,
                balance_after=self.balance,
                available=self.available,
                reason="insufficient credits",
                idempotency_key=key,
                fingerprint=fingerprint,
                cause_id=info["cause_id"],
                correlation_id=info["correlation_id"],
            )
            return False
        self._debited(
            entry_type=entry_type,
            amount=amount,
            balance_after=self.balance - amount,
            shortfall=0,
            idempotency_key=key,
            fingerprint=fingerprint,
            **info,
        )
        return True

    def claw_back(self, *, amount: int, key: str, fingerprint: str, **details: Any) -> None:
        """Take back refunded credits: as many as there are, recording what could not be taken."""
        _positive(amount)
        taken = min(amount, self.available)
        self._debited(
            entry_type="REFUND",
            amount=taken,
            balance_after=self.balance - taken,
            shortfall=amount - taken,
            idempotency_key=key,
            fingerprint=fingerprint,
            **_details(details),
        )

    def reserve(
        self,
        *,
        reservation_id: str,
        amount: int,
        job_id: str | None,
        expires_at: datetime,
        key: str,
        fingerprint: str,
        cause_id: str | None = None,
        correlation_id: str | None = None,
    ) -> bool:
        _positive(amount)
        if not self.active:
            raise AccountInactiveError("the account is deactivated")
        if reservation_id in self.reservations:
            raise InvalidCommandError(f"reservation {reservation_id} exists")
        common = {
            "reservation_id": reservation_id,
            "amount": amount,
            "job_id": job_id,
            "idempotency_key": key,
            "fingerprint": fingerprint,
            "cause_id": cause_id,
            "correlation_id": correlation_id,
        }
        if amount > self.available:
            self._reservation_rejected(
                balance_after=self.balance, available=self.available, reason="insufficient credits", **common
            )
            return False
        self._reserved(
            expires_at=expires_at.isoformat(),
            balance_after=self.balance,
            reserved_after=self.reserved + amount,
            **common,
        )
        return True

    def capture(
        self,
        *,
        reservation_id: str,
        amount: int | None,
        description: str,
        key: str,
        fingerprint: str,
        cause_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        held = self._held(reservation_id)
        taken = held if amount is None else amount
        if not 0 <= taken <= held:
            raise InvalidCommandError(f"capture of {taken} from a hold of {held}")
        self._captured(
            reservation_id=reservation_id,
            job_id=self.reservations[reservation_id][1],
            amount=taken,
            released=held - taken,
            balance_after=self.balance - taken,
            reserved_after=self.reserved - held,
            description=description,
            idempotency_key=key,
            fingerprint=fingerprint,
            cause_id=cause_id,
            correlation_id=correlation_id,
        )

    def release(
        self,
        *,
        reservation_id: str,
        reason: str,
        key: str,
        fingerprint: str,
        cause_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        held = self._held(reservation_id)
        self._released(
            reservation_id=reservation_id,
            job_id=self.reservations[reservation_id][1],
            amount=held,
            reason=reason,
            balance_after=self.balance,
            reserved_after=self.reserved - held,
            idempotency_key=key,
            fingerprint=fingerprint,
            cause_id=cause_id,
            correlation_id=correlation_id,
        )

    def refuse_reservation(
        self,
        *,
        reservation_id: str,
        amount: int,
        job_id: str | None,
        reason: str,
        key: str,
        fingerprint: str,
        cause_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Answer a hold request with a refusal that is not about credits (a deactivated account)."""
        self._reservation_rejected(
            reservation_id=reservation_id,
            amount=amount,
            job_id=job_id,
            balance_after=self.balance,
            available=self.available,
            reason=reason,
            idempotency_key=key,
            fingerprint=fingerprint,
            cause_id=cause_id,
            correlation_id=correlation_id,
        )

    def note(self, *, reason: str, key: str, fingerprint: str, cause_id: str | None = None) -> None:
        """Record that a command was seen and deliberately changed nothing, so its redelivery and
        any later command that depends on it (a purchase after its own refund) can tell."""
        self._noted(reason=reason, idempotency_key=key, fingerprint=fingerprint, cause_id=cause_id)

    def set_active(self, *, active: bool, at: datetime, key: str, fingerprint: str, cause_id: str | None) -> None:
        """Apply identity's status change unless a newer one was applied already."""
        if self.status_at is not None and at <= datetime.fromisoformat(self.status_at):
            self.note(reason="stale status change", key=key, fingerprint=fingerprint, cause_id=cause_id)
            return
        change = self._activated if active else self._deactivated
        change(at=at.isoformat(), idempotency_key=key, fingerprint=fingerprint, cause_id=cause_id)

    def reservation_for_job(self, job_id: str) -> str | None:
        return next((rid for rid, (_, job, _) in self.reservations.items() if job == job_id), None)

    def expired_reservations(self, now: datetime) -> list[str]:
        return [rid for rid, (_, _, expires) in self.reservations.items() if datetime.fromisoformat(expires) <= now]

    def _held(self, reservation_id: str) -> int:
        held = self.reservations.get(reservation_id)
        if held is None:
            raise ReservationNotFoundError(f"no open reservation {reservation_id}")
        return int(held[0])

    # -- events -----------------------------------------------------------------------------------

    @event("Granted")
    def _granted(
        self,
        entry_type: str,
        amount: int,
        balance_after: int,
        description: str,
        metadata: dict[str, Any],
        idempotency_key: str,
        fingerprint: str,
        cause_id: str | None,
        correlation_id: str | None,
    ) -> None:
        self.balance = balance_after

    @event("Debited")
    def _debited(
        self,
        entry_type: str,
        amount: int,
        balance_after: int,
        shortfall: int,
        description: str,
        metadata: dict[str, Any],
        idempotency_key: str,
        fingerprint: str,
        cause_id: str | None,
        correlation_id: str | None,
    ) -> None:
        self.balance = balance_after

    @event("DebitRejected")
    def _debit_rejected(
        self,
        amount: int,
        balance_after: int,
        available: int,
        reason: str,
        idempotency_key: str,
        fingerprint: str,
        cause_id: str | None,
        correlation_id: str | None,
    ) -> None:
        pass  # the event itself is the record

    @event("Reserved")
    def _reserved(
        self,
        reservation_id: str,
        amount: int,
        job_id: str | None,
        expires_at: str,
        balance_after: int,
        reserved_after: int,
        idempotency_key: str,
        fingerprint: str,
        cause_id: str | None,
        correlation_id: str | None,
    ) -> None:
        self.reservations[reservation_id] = [amount, job_id, expires_at]
        self.reserved += amount

    @event("ReservationRejected")
    def _reservation_rejected(
        self,
        reservation_id: str,
        amount: int,
        job_id: str | None,
        balance_after: int,
        available: int,
        reason: str,
        idempotency_key: str,
        fingerprint: str,
        cause_id: str | None,
        correlation_id: str | None,
    ) -> None:
        pass  # the event itself is the record

    @event("Captured")
    def _captured(
        self,
        reservation_id: str,
        job_id: str | None,
        amount: int,
        released: int,
        balance_after: int,
        reserved_after: int,
        description: str,
        idempotency_key: str,
        fingerprint: str,
        cause_id: str | None,
        correlation_id: str | None,
    ) -> None:
        held = self.reservations.pop(reservation_id)
        self.reserved -= int(held[0])
        self.balance = balance_after

    @event("Released")
    def _released(
        self,
        reservation_id: str,
        job_id: str | None,
        amount: int,
        reason: str,
        balance_after: int,
        reserved_after: int,
        idempotency_key: str,
        fingerprint: str,
        cause_id: str | None,
        correlation_id: str | None,
    ) -> None:
        held = self.reservations.pop(reservation_id)
        self.reserved -= int(held[0])

    @event("Noted")
    def _noted(self, reason: str, idempotency_key: str, fingerprint: str, cause_id: str | None) -> None:
        pass  # the event itself is the record

    @event("Deactivated")
    def _deactivated(self, at: str, idempotency_key: str, fingerprint: str, cause_id: str | None) -> None:
        self.active = False
        self.status_at = at

    @event("Reactivated")
    def _activated(self, at: str, idempotency_key: str, fingerprint: str, cause_id: str | None) -> None:
        self.active = True
        self.status_at = at


def _positive(amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise InvalidCommandError("amount must be a positive integer")


def _details(details: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": str(details.get("description", "")),
        "metadata": dict(details.get("metadata") or {}),
        "cause_id": details.get("cause_id"),
        "correlation_id": details.get("correlation_id"),
    }


def reservation_expiry(now: datetime, ttl_seconds: int) -> datetime:
    return now + timedelta(seconds=ttl_seconds)
