"""The credit account: the single source of truth for one user's balance.

Pure domain: stdlib and eventsourcing only. Every change is an event; every command carries a
`Stamp` (its idempotency key and fingerprint, and what caused it), and the event it produces records
it. Which key produced which event is kept in a small `IdempotencyRecord` per key, saved in the same
transaction as the account's event: the account's own state (and so its snapshots) stays the size of
its open holds, however many commands it has seen. The rules for events that arrive out of order (a
refund before its purchase, a job's end before its hold) live here too: the caller only says which of
the sibling keys the account has already seen.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from eventsourcing.domain import Aggregate, event

from shared.credits import LOW_BALANCE_THRESHOLD

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
    # -- events (their names are their stored topics: never rename one) --------------------------

    class Keyed(Aggregate.Event):
        """An event that records only the key and meaning of the command behind it (no trace)."""

        idempotency_key: str
        fingerprint: str
        cause_id: str | None

    class Stamped(Aggregate.Event):
        idempotency_key: str
        fingerprint: str
        cause_id: str | None
        correlation_id: str | None
        traceparent: str | None  # events stored before it was recorded read back without it

    class BalanceChanged(Stamped):
        entry_type: str
        amount: int
        balance_after: int
        reserved_after: int  # so the stream can say what is available after (older events lack it)
        description: str
        metadata: dict[str, Any]

        def apply(self, aggregate: Aggregate) -> None:
            _account(aggregate).balance = self.balance_after

    class Granted(BalanceChanged):
        expires_at: str | None  # events stored before lots read back without it: never expiring

        def apply(self, aggregate: Aggregate) -> None:
            account = _account(aggregate)
            account.balance = self.balance_after
            expires = getattr(self, "expires_at", None)
            expires_at = datetime.fromisoformat(expires) if expires else None
            account.lots[str(self.originator_version)] = Lot(self.idempotency_key, self.amount, self.amount, expires_at)

    class Debited(BalanceChanged):
        shortfall: int  # what a claw-back could not take
        lots: Portions  # events stored before lots read back without it: taken in spending order

        def apply(self, aggregate: Aggregate) -> None:
            account = _account(aggregate)
            account.balance = self.balance_after
            account.spend(getattr(self, "lots", None) or account.portions(self.amount))

    class Expired(BalanceChanged):
        """The unspent remainder of a lot left the balance at its expiry."""

        lot_id: str
        expires_at: str

        def apply(self, aggregate: Aggregate) -> None:
            account = _account(aggregate)
            account.balance = self.balance_after
            account.spend({self.lot_id: self.amount})

    class DebitRejected(Stamped):
        amount: int
        balance_after: int
        available: int
        reason: str

    class Reserved(Stamped):
        reservation_id: str
        amount: int
        job_id: str | None
        expires_at: str
        balance_after: int
        reserved_after: int

        lots: Portions  # events stored before lots read back without it

        def apply(self, aggregate: Aggregate) -> None:
            account = _account(aggregate)
            portions = getattr(self, "lots", None) or account.portions(self.amount)
            hold = Hold(self.amount, self.job_id, datetime.fromisoformat(self.expires_at), portions)
            account.reservations[self.reservation_id] = hold
            account.reserved += self.amount

    class ReservationRejected(Stamped):
        reservation_id: str
        amount: int
        job_id: str | None
        balance_after: int
        available: int
        reason: str

    class HoldClosed(Stamped):
        reservation_id: str
        job_id: str | None
        amount: int  # captured, or released
        balance_after: int
        reserved_after: int

        def apply(self, aggregate: Aggregate) -> None:
            account = _account(aggregate)
            account.reserved -= account.reservations.pop(self.reservation_id).amount
            account.balance = self.balance_after

    class Captured(HoldClosed):
        released: int  # the rest of the hold, given back
        description: str
        lots: Portions  # what the capture took from each lot (events stored before lots lack it)

        def apply(self, aggregate: Aggregate) -> None:
            account = _account(aggregate)
            hold = account.reservations.pop(self.reservation_id)
            account.reserved -= hold.amount
            account.balance = self.balance_after
            account.spend(getattr(self, "lots", None) or _first(hold.lots, self.amount, account.lots))

    class Released(HoldClosed):
        reason: str

    class BalanceLow(Stamped):
        """Available credit crossed below a threshold (a notification: nothing moves)."""

        available: int
        threshold: int | None  # the notification threshold, when crossed
        recharge_threshold: int | None  # the user's auto-recharge threshold, when crossed
        cause_version: int  # the event that crossed

    class RechargeThresholdSet(Keyed):
        """Where payments wants the account watched for auto-recharge (None: not at all)."""

        threshold: int | None
        at: str

        def apply(self, aggregate: Aggregate) -> None:
            account = _account(aggregate)
            account.recharge_threshold, account.recharge_at = self.threshold, self.at

    class ExpiringSoon(Stamped):
        """A lot will expire within the warning period with credit left (a notification: nothing moves)."""

        lot_id: str
        remaining: int
        expires_at: str

    class Noted(Keyed):
        """A command seen that deliberately changed nothing: its retry, and siblings asking, can tell."""

        reason: str

    class StatusChanged(Keyed):
        active: ClassVar[bool]
        at: str

        def apply(self, aggregate: Aggregate) -> None:
            account = _account(aggregate)
            account.active, account.status_at = self.active, self.at

    class Deactivated(StatusChanged):
        active = False

    class Reactivated(StatusChanged):
        active = True

    # -- state ----------------------------------------------------------------------------------

    @staticmethod
    def create_id(user_id: str) -> uuid.UUID:
        return uuid.UUID(user_id)

    @event("Opened")
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.balance = 0
        self.reserved = 0
        self.active = True
        self.reservations: dict[str, Hold] = {}
        self.lots: dict[str, Lot] = {}  # by the version of the grant that made each
        # When identity last changed the status: status events can arrive out of order.
        self.status_at: str | None = None
        # The user's auto-recharge threshold (payments' word, newest by `recharge_at`), or None.
        self.recharge_threshold: int | None = None
        self.recharge_at: str | None = None

    @property
    def available(self) -> int:
        return self.balance - self.reserved

    # -- lots -----------------------------------------------------------------------------------

    def held(self, lot_id: str) -> int:
        return sum(hold.lots.get(lot_id, 0) for hold in self.reservations.values())

    def free(self, lot_id: str) -> int:
        """What of a lot may be spent now: what is left, less what holds set aside."""
        return self.lots[lot_id].remaining - self.held(lot_id)

    def portions(self, amount: int) -> Portions:
        """Which lots `amount` of free credit comes from, in spending order."""
        free = {lot_id: self.free(lot_id) for lot_id in self.lots}
        return _first(free, amount, self.lots)

    def spend(self, portions: Portions) -> None:
        """Take what `portions` says from each lot; a lot with nothing left is gone."""
        for lot_id, taken in portions.items():
            lot = self.lots[lot_id]
            if lot.remaining == taken and not self.held(lot_id):
                del self.lots[lot_id]
            else:
                self.lots[lot_id] = replace(lot, remaining=lot.remaining - taken)

    def lot_of(self, source: str) -> str | None:
        """The lot a grant made, by the grant's idempotency key (None once it is spent)."""
        return next((lot_id for lot_id, lot in self.lots.items() if lot.source == source), None)

    def reservation_for_job(self, job_id: str) -> str | None:
        return next((rid for rid, hold in self.reservations.items() if hold.job_id == job_id), None)

    # -- credits in and out ---------------------------------------------------------------------

    def grant(
        self,
        stamp: Stamp,
        *,
        entry_type: str,
        amount: int,
        description: str = "",
        metadata: dict[str, Any] | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        if entry_type not in GRANT_TYPES:
            raise InvalidCommandError(f"{entry_type} is not a grant type")
        _positive(amount)
        self.trigger_event(
            self.Granted,
            entry_type=entry_type,
            amount=amount,
            balance_after=self.balance + amount,
            reserved_after=self.reserved,
            description=description,
            metadata=dict(metadata or {}),
            expires_at=expires_at.isoformat() if expires_at else None,
            **stamp.recorded(),
        )

    def debit(
        self,
        stamp: Stamp,
        *,
        entry_type: str,
        amount: int,
        description: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Debit whole or not at all; a refusal is recorded too, so its retry answers the same."""
        if entry_type not in DEBIT_TYPES:
            raise InvalidCommandError(f"{entry_type} is not a debit type")
        _positive(amount)
        self._must_be_active()
        if amount > self.available:
            self.trigger_event(
                self.DebitRejected,
                amount=amount,
                balance_after=self.balance,
                available=self.available,
                reason="insufficient credits",
                **stamp.recorded(),
            )
            return
        self._debited(stamp, entry_type, amount, 0, description, dict(metadata or {}))

    def claw_back(
        self, stamp: Stamp, *, amount: int, lot_source: str, description: str, metadata: dict[str, Any]
    ) -> None:
        """Take back refunded credits from the lot their purchase made: as many as it has left free,
        recording what could not be taken (spent already, or set aside by a hold)."""
        _positive(amount)
        lot_id = self.lot_of(lot_source)
        taken = min(amount, self.free(lot_id)) if lot_id is not None else 0
        portions = {lot_id: taken} if lot_id is not None and taken else {}
        self._debited(stamp, "REFUND", taken, amount - taken, description, metadata, portions)

    def _debited(
        self,
        stamp: Stamp,
        entry_type: str,
        amount: int,
        shortfall: int,
        description: str,
        metadata: dict[str, Any],
        portions: Portions | None = None,
    ) -> None:
        self.trigger_event(
            self.Debited,
            entry_type=entry_type,
            amount=amount,
            balance_after=self.balance - amount,
            reserved_after=self.reserved,
            shortfall=shortfall,
            description=description,
            metadata=metadata,
            lots=self.portions(amount) if portions is None else portions,
            **stamp.recorded(),
        )
        self._announce_if_low(stamp, self.available + amount)

    def expire_lot(self, stamp: Stamp, *, lot_id: str, now: datetime) -> None:
        """At its expiry the unspent remainder of a lot leaves the balance, once; a lot a hold still
        draws on waits until the hold is settled, so expiry never takes reserved credit."""
        lot = self.lots.get(lot_id)
        if lot is None:
            self.note(stamp, reason="lot spent before it expired")
        elif lot.expires_at is None or lot.expires_at > now:
            # Refused without an event, so the key stays free for when it does expire.
            raise InvalidCommandError(f"lot {lot_id} has not expired")
        elif self.held(lot_id):
            raise InvalidCommandError(f"lot {lot_id} is held by a reservation until it is settled")
        else:
            self.trigger_event(
                self.Expired,
                entry_type="EXPIRED",
                amount=lot.remaining,
                balance_after=self.balance - lot.remaining,
                reserved_after=self.reserved,
                description=f"{lot.remaining} credits expired",
                metadata={"lot_id": lot_id, "granted": lot.amount, "source": lot.source},
                lot_id=lot_id,
                expires_at=lot.expires_at.isoformat(),
                **stamp.recorded(),
            )
            self._announce_if_low(stamp, self.available + lot.remaining)

    # -- holds ----------------------------------------------------------------------------------

    def reserve(
        self, stamp: Stamp, *, reservation_id: str, amount: int, job_id: str | None, expires_at: datetime
    ) -> None:
        _positive(amount)
        self._must_be_active()
        if reservation_id in self.reservations:
            raise InvalidCommandError(f"reservation {reservation_id} exists")
        if amount > self.available:
            self._refuse_hold(stamp, reservation_id, amount, job_id, "insufficient credits")
            return
        self.trigger_event(
            self.Reserved,
            reservation_id=reservation_id,
            amount=amount,
            job_id=job_id,
            expires_at=expires_at.isoformat(),
            balance_after=self.balance,
            reserved_after=self.reserved + amount,
            lots=self.portions(amount),
            **stamp.recorded(),
        )
        self._announce_if_low(stamp, self.available + amount)

    def capture(self, stamp: Stamp, *, reservation_id: str, amount: int | None, description: str) -> None:
        hold = self._hold(reservation_id)
        taken = hold.amount if amount is None else amount
        if not 0 <= taken <= hold.amount:
            raise InvalidCommandError(f"capture of {taken} from a hold of {hold.amount}")
        self.trigger_event(
            self.Captured,
            reservation_id=reservation_id,
            job_id=hold.job_id,
            amount=taken,
            released=hold.amount - taken,
            balance_after=self.balance - taken,
            reserved_after=self.reserved - hold.amount,
            description=description,
            lots=_first(hold.lots, taken, self.lots),
            **stamp.recorded(),
        )

    def release(self, stamp: Stamp, *, reservation_id: str, reason: str) -> None:
        hold = self._hold(reservation_id)
        self.trigger_event(
            self.Released,
            reservation_id=reservation_id,
            job_id=hold.job_id,
            amount=hold.amount,
            reason=reason,
            balance_after=self.balance,
            reserved_after=self.reserved - hold.amount,
            **stamp.recorded(),
        )

    def check_not_held_for_a_job(self, reservation_id: str) -> None:
        """A caller may settle the holds it placed, never a media job's. The job's completion captures its
        hold and its failure or cancellation releases it (`charge_job`, `end_job`): had anyone captured it
        first, the completion would find no hold and charge the job again; had anyone released it, the work
        would be done on credits that may be gone by then. So this holds for admins and services too: a
        stuck job's hold is released when it expires, or when the job is cancelled through media."""
        hold = self._hold(reservation_id)
        if hold.job_id is not None:
            raise HeldForJobError(
                f"Reservation {reservation_id} belongs to media job {hold.job_id} and is settled by it: its"
                " completion captures it, its failure or cancellation releases it."
            )

    def expire(self, stamp: Stamp, *, reservation_id: str, now: datetime) -> None:
        """Release a hold whose time is up; one settled meanwhile is noted, one not yet due refused."""
        hold = self.reservations.get(reservation_id)
        if hold is None:
            self.note(stamp, reason="hold settled before it expired")
        elif hold.expires_at > now:
            # Refused without an event, so the key stays free for when it does expire.
            raise InvalidCommandError(f"reservation {reservation_id} has not expired")
        else:
            self.release(stamp, reservation_id=reservation_id, reason="expired")

    def _refuse_hold(self, stamp: Stamp, reservation_id: str, amount: int, job_id: str | None, reason: str) -> None:
        self.trigger_event(
            self.ReservationRejected,
            reservation_id=reservation_id,
            amount=amount,
            job_id=job_id,
            balance_after=self.balance,
            available=self.available,
            reason=reason,
            **stamp.recorded(),
        )

    def _hold(self, reservation_id: str) -> Hold:
        hold = self.reservations.get(reservation_id)
        if hold is None:
            raise ReservationNotFoundError(f"no open reservation {reservation_id}")
        return hold

    # -- what other services' events ask for, in whatever order they arrive ----------------------

    def purchase(
        self, stamp: Stamp, *, credits: int, refunded_first: bool, description: str, metadata: dict[str, Any]
    ) -> None:
        if refunded_first or credits == 0:
            # Its refund came first and took nothing: granting now would give away refunded credits.
            self.note(stamp, reason="purchase refunded before it was granted")
        else:
            self.grant(stamp, entry_type="PURCHASE", amount=credits, description=description, metadata=metadata)

    def refund(
        self,
        stamp: Stamp,
        *,
        credits: int,
        purchase_key: str,
        purchase_granted: bool,
        description: str,
        metadata: dict[str, Any],
    ) -> None:
        if not purchase_granted or credits == 0:
            self.note(stamp, reason="refund before its purchase was granted")
        else:
            self.claw_back(stamp, amount=credits, lot_source=purchase_key, description=description, metadata=metadata)

    def hold_for_job(
        self, stamp: Stamp, *, reservation_id: str, job_id: str, cost: int, expires_at: datetime, job_settled: bool
    ) -> None:
        if job_settled:
            self.note(stamp, reason="job settled before its hold was asked")
        elif not self.active:
            self._refuse_hold(stamp, reservation_id, cost, job_id, "account deactivated")
        else:
            self.reserve(stamp, reservation_id=reservation_id, amount=cost, job_id=job_id, expires_at=expires_at)

    def charge_job(self, stamp: Stamp, *, job_id: str, cost: int, operation: str) -> None:
        description = f"{operation} ({job_id})"
        rid = self.reservation_for_job(job_id)
        if rid is not None:
            taken = min(cost, self.reservations[rid].amount)
            self.capture(stamp, reservation_id=rid, amount=taken, description=description)
        elif cost > 0 and self.active:
            # No hold (it expired, or the completion overtook the request): charge the work now, whole
            # or refused; a refusal goes on the stream as ledger.debit.rejected for operators to see.
            metadata = {"job_id": job_id, "operation": operation}
            self.debit(stamp, entry_type="USAGE", amount=cost, description=description, metadata=metadata)
        else:
            self.note(stamp, reason="nothing to capture")

    def end_job(self, stamp: Stamp, *, job_id: str, reason: str) -> None:
        rid = self.reservation_for_job(job_id)
        if rid is None:
            self.note(stamp, reason="nothing held")
        else:
            self.release(stamp, reservation_id=rid, reason=reason)

    # -- status ---------------------------------------------------------------------------------

    def set_active(self, stamp: Stamp, *, active: bool, at: datetime) -> None:
        """Apply identity's status change unless a newer one was applied already."""
        if self.status_at is not None and at <= datetime.fromisoformat(self.status_at):
            self.note(stamp, reason="stale status change")
            return
        change = self.Reactivated if active else self.Deactivated
        self.trigger_event(
            change, at=at.isoformat(), idempotency_key=stamp.key, fingerprint=stamp.fingerprint, cause_id=stamp.cause_id
        )

    # -- notifications --------------------------------------------------------------------------

    def _announce_if_low(self, stamp: Stamp, available_before: int) -> None:
        """After an event that lowered available credit: announce a crossing below the notification
        threshold or the user's auto-recharge threshold, as a second event of the same command (so
        exactly once per crossing, in the same transaction)."""
        after = self.available
        low = LOW_BALANCE_THRESHOLD if available_before >= LOW_BALANCE_THRESHOLD > after else None
        recharge = getattr(self, "recharge_threshold", None)  # snapshots from before it lack it
        recharge = recharge if recharge is not None and available_before >= recharge > after else None
        if low is not None or recharge is not None:
            self.trigger_event(
                self.BalanceLow, available=after, threshold=low, recharge_threshold=recharge,
                cause_version=self.version, **stamp.recorded(),
            )  # fmt: skip

    def set_recharge_threshold(self, stamp: Stamp, *, threshold: int | None, at: datetime) -> None:
        """Apply payments' auto-recharge threshold unless a newer one was applied already."""
        current = getattr(self, "recharge_at", None)
        if current is not None and at <= datetime.fromisoformat(current):
            self.note(stamp, reason="stale auto-recharge setting")
            return
        self.trigger_event(
            self.RechargeThresholdSet, threshold=threshold, at=at.isoformat(), idempotency_key=stamp.key,
            fingerprint=stamp.fingerprint, cause_id=stamp.cause_id,
        )  # fmt: skip

    def warn_expiring(self, stamp: Stamp, *, lot_id: str) -> None:
        """Warn of a lot's expiry, once, if it still has credit to lose."""
        lot = self.lots.get(lot_id)
        if lot is None or lot.expires_at is None:
            self.note(stamp, reason="lot spent before its expiry came near")
        else:
            self.trigger_event(
                self.ExpiringSoon, lot_id=lot_id, remaining=lot.remaining, expires_at=lot.expires_at.isoformat(),
                **stamp.recorded(),
            )  # fmt: skip

    def note(self, stamp: Stamp, *, reason: str) -> None:
        """Record that a command was seen and deliberately changed nothing."""
        self.trigger_event(
            self.Noted, reason=reason, idempotency_key=stamp.key, fingerprint=stamp.fingerprint, cause_id=stamp.cause_id
        )

    def _must_be_active(self) -> None:
        if not self.active:
            raise AccountInactiveError("the account is deactivated")


def _account(aggregate: Aggregate) -> CreditAccount:
    assert isinstance(aggregate, CreditAccount)
    return aggregate


def _positive(amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise InvalidCommandError("amount must be a positive integer")


def _first(available: Portions, amount: int, lots: dict[str, Lot]) -> Portions:
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
