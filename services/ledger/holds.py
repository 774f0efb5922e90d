"""The credit account's rules for holds: credits set aside for a job or a caller until captured, released or
expired, and a media job's hold settled by the job's own events (domain.py mixes them into CreditAccount)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from services.ledger import events
from services.ledger.values import (
    HeldForJobError,
    Hold,
    InvalidCommandError,
    Lot,
    ReservationNotFoundError,
    Stamp,
    check_positive,
    in_spending_order,
)


class Holds:
    # What the rules use of the account they are mixed into.
    balance: int
    reserved: int
    active: bool
    reservations: dict[str, Hold]
    lots: dict[str, Lot]
    Reserved: ClassVar[type[events.Reserved]]
    ReservationRejected: ClassVar[type[events.ReservationRejected]]
    Captured: ClassVar[type[events.Captured]]
    Released: ClassVar[type[events.Released]]

    if TYPE_CHECKING:  # the account's own: declared for the type checker, never shadowing them

        @property
        def available(self) -> int: ...
        def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None: ...
        def portions(self, amount: int) -> dict[str, int]: ...
        def note(self, stamp: Stamp, *, reason: str) -> None: ...

        debit: Callable[..., None]

        def _announce_if_low(self, stamp: Stamp, available_before: int) -> None: ...
        def _must_be_active(self) -> None: ...
        def refusal(self, amount: int, member_id: str | None, month: str | None) -> dict[str, Any] | None: ...

    def reservation_for_job(self, job_id: str) -> str | None:
        return next((rid for rid, hold in self.reservations.items() if hold.job_id == job_id), None)

    def reserve(
        self, stamp: Stamp, *, reservation_id: str, amount: int, job_id: str | None, expires_at: datetime,
        member_id: str | None = None, month: str | None = None,
    ) -> None:  # fmt: skip
        check_positive(amount)
        self._must_be_active()
        if reservation_id in self.reservations:
            raise InvalidCommandError(f"reservation {reservation_id} exists")
        refusal = self.refusal(amount, member_id, month)
        if refusal is not None:
            self._refuse_hold(stamp, reservation_id, amount, job_id, **refusal)
            return
        self.trigger_event(
            self.Reserved,
            reservation_id=reservation_id,
            amount=amount,
            job_id=job_id,
            member_id=member_id,
            expires_at=expires_at.isoformat(),
            balance_after=self.balance,
            reserved_after=self.reserved + amount,
            lots=self.portions(amount),
            **stamp.recorded(),
        )
        self._announce_if_low(stamp, self.available + amount)

    def capture(
        self, stamp: Stamp, *, reservation_id: str, amount: int | None, description: str, month: str | None = None
    ) -> None:
        """Take `amount` (None: all) of a hold; a member's counts against their limit in `month`."""
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
            lots=in_spending_order(hold.lots, taken, self.lots),
            member_id=hold.member_id,
            month=month,
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

    def _refuse_hold(
        self, stamp: Stamp, reservation_id: str, amount: int, job_id: str | None, reason: str,
        member_id: str | None = None, limit: int | None = None, used: int | None = None,
    ) -> None:  # fmt: skip
        self.trigger_event(
            self.ReservationRejected,
            reservation_id=reservation_id,
            amount=amount,
            job_id=job_id,
            balance_after=self.balance,
            available=self.available,
            reason=reason,
            member_id=member_id,
            limit=limit,
            used=used,
            **stamp.recorded(),
        )

    def _hold(self, reservation_id: str) -> Hold:
        hold = self.reservations.get(reservation_id)
        if hold is None:
            raise ReservationNotFoundError(f"no open reservation {reservation_id}")
        return hold

    # -- a media job's hold, settled by the job's own events in whatever order they arrive ---------

    def hold_for_job(
        self, stamp: Stamp, *, reservation_id: str, job_id: str, cost: int, expires_at: datetime, job_settled: bool,
        member_id: str | None = None, month: str | None = None,
    ) -> None:  # fmt: skip
        if job_settled:
            self.note(stamp, reason="job settled before its hold was asked")
        elif not self.active:
            self._refuse_hold(stamp, reservation_id, cost, job_id, "account deactivated", member_id)
        else:
            self.reserve(
                stamp, reservation_id=reservation_id, amount=cost, job_id=job_id, expires_at=expires_at,
                member_id=member_id, month=month,
            )  # fmt: skip

    def charge_job(
        self, stamp: Stamp, *, job_id: str, cost: int, operation: str, member_id: str | None = None,
        month: str | None = None,
    ) -> None:  # fmt: skip
        description = f"{operation} ({job_id})"
        rid = self.reservation_for_job(job_id)
        if rid is not None:
            taken = min(cost, self.reservations[rid].amount)
            self.capture(stamp, reservation_id=rid, amount=taken, description=description, month=month)
        elif cost > 0 and self.active:
            # No hold (it expired, or the completion overtook the request): charge the work now, whole
            # or refused; a refusal goes on the stream as ledger.debit.rejected for operators to see.
            metadata = {"job_id": job_id, "operation": operation}
            self.debit(
                stamp, entry_type="USAGE", amount=cost, description=description, metadata=metadata,
                member_id=member_id, month=month,
            )  # fmt: skip
        else:
            self.note(stamp, reason="nothing to capture")

    def end_job(self, stamp: Stamp, *, job_id: str, reason: str) -> None:
        rid = self.reservation_for_job(job_id)
        if rid is None:
            self.note(stamp, reason="nothing held")
        else:
            self.release(stamp, reservation_id=rid, reason=reason)
