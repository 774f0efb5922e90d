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
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar

from eventsourcing.domain import Aggregate, event

from services.ledger import events
from services.ledger.events import Upcast
from services.ledger.holds import Holds
from services.ledger.values import (
    DEBIT_TYPES,
    GRANT_TYPES,
    AccountInactiveError,
    Allowance,
    Hold,
    IdempotencyConflictError,
    InvalidCommandError,
    Lot,
    Portions,
    Stamp,
    check_positive,
    in_spending_order,
)
from shared.credits import LOW_BALANCE_THRESHOLD


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


class CreditAccount(Upcast, Holds, Aggregate):
    # -- events: each stored one by the name it is stored under (its topic: never rename one), its body in
    # events.py

    class Granted(events.Granted): ...

    class Debited(events.Debited): ...

    class Expired(events.Expired): ...

    class DebitRejected(events.DebitRejected): ...

    class Reserved(events.Reserved): ...

    class ReservationRejected(events.ReservationRejected): ...

    class Captured(events.Captured): ...

    class Released(events.Released): ...

    class BalanceLow(events.BalanceLow): ...

    class RechargeThresholdSet(events.RechargeThresholdSet): ...

    class ExpiringSoon(events.ExpiringSoon): ...

    class Noted(events.Noted): ...

    class Deactivated(events.Deactivated): ...

    class Reactivated(events.Reactivated): ...

    class MemberLimitSet(events.MemberLimitSet): ...

    class UsageCapSet(events.UsageCapSet): ...

    # -- state ----------------------------------------------------------------------------------

    # What a snapshot taken before auto-recharge lacks: no threshold watched; before organizations: no members.
    ADDED: ClassVar[dict[str, Any]] = {
        "recharge_threshold": None, "recharge_at": None, "members": {}, "usage": Allowance(),
    }  # fmt: skip

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
        # An organization's account: each member's limit and spending this month, by user id.
        self.members: dict[str, Allowance] = {}
        # The account's own spending this month, against its owner's monthly cap (limit None: no cap).
        self.usage = Allowance()

    @property
    def available(self) -> int:
        return self.balance - self.reserved

    # -- an organization's members ----------------------------------------------------------------

    def member_used(self, member_id: str, month: str) -> int:
        """What a member spent this month and holds now: what their limit is measured against."""
        spent = self.members.get(member_id, Allowance()).used_in(month)
        return spent + sum(hold.amount for hold in self.reservations.values() if hold.member_id == member_id)

    def set_usage_cap(self, stamp: Stamp, *, monthly_credits: int | None, set_by: str) -> None:
        if monthly_credits is not None and (isinstance(monthly_credits, bool) or monthly_credits < 0):
            raise InvalidCommandError("a monthly cap is a whole number of credits, 0 or more")
        self.trigger_event(self.UsageCapSet, monthly_credits=monthly_credits, set_by=set_by, **stamp.recorded())

    def used(self, month: str) -> int:
        """What the account spent this month and holds now: what its cap is measured against."""
        return self.usage.used_in(month) + self.reserved

    def set_member_limit(self, stamp: Stamp, *, member_id: str, monthly_credits: int | None, admin_id: str) -> None:
        if monthly_credits is not None and (isinstance(monthly_credits, bool) or monthly_credits < 0):
            raise InvalidCommandError("a monthly limit is a whole number of credits, 0 or more")
        self.trigger_event(
            self.MemberLimitSet, member_id=member_id, monthly_credits=monthly_credits, admin_id=admin_id,
            **stamp.recorded(),
        )  # fmt: skip

    def over_limit(self, amount: int, member_id: str | None, month: str | None) -> dict[str, Any] | None:
        """What refuses `amount` to a member: their limit and what they used of it; None if it fits."""
        if member_id is None or month is None:
            return None
        limit = self.members.get(member_id, Allowance()).limit
        used = self.member_used(member_id, month)
        if limit is None or used + amount <= limit:
            return None
        return {"member_id": member_id, "limit": limit, "used": used}

    # -- lots -----------------------------------------------------------------------------------

    def held(self, lot_id: str) -> int:
        return sum(hold.lots.get(lot_id, 0) for hold in self.reservations.values())

    def free(self, lot_id: str) -> int:
        """What of a lot may be spent now: what is left, less what holds set aside."""
        return self.lots[lot_id].remaining - self.held(lot_id)

    def portions(self, amount: int) -> Portions:
        """Which lots `amount` of free credit comes from, in spending order."""
        free = {lot_id: self.free(lot_id) for lot_id in self.lots}
        return in_spending_order(free, amount, self.lots)

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
        value_cents: int = 0,
        currency: str | None = None,
    ) -> None:
        """Credits in, as a lot of their own; a sold one records what all of it cost (`value_cents` in
        `currency`): what its credits are worth as revenue when they are spent."""
        if entry_type not in GRANT_TYPES:
            raise InvalidCommandError(f"{entry_type} is not a grant type")
        check_positive(amount)
        self.trigger_event(
            self.Granted,
            entry_type=entry_type,
            amount=amount,
            balance_after=self.balance + amount,
            reserved_after=self.reserved,
            description=description,
            metadata=dict(metadata or {}),
            expires_at=expires_at.isoformat() if expires_at else None,
            value_cents=value_cents,
            currency=currency.upper() if value_cents and currency else None,
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
        member_id: str | None = None,
        month: str | None = None,
    ) -> None:
        """Debit whole or not at all; a refusal is recorded too, so its retry answers the same. A member of an
        organization spending its credit (`member_id`, in `month`) is held to their monthly limit."""
        if entry_type not in DEBIT_TYPES:
            raise InvalidCommandError(f"{entry_type} is not a debit type")
        check_positive(amount)
        self._must_be_active()
        refusal = self.refusal(amount, member_id, month)
        if refusal is not None:
            self.trigger_event(
                self.DebitRejected, amount=amount, balance_after=self.balance, available=self.available, **refusal,
                **stamp.recorded(),
            )  # fmt: skip
            return
        self._debited(stamp, entry_type, amount, 0, description, dict(metadata or {}), None, member_id, month)

    def refusal(self, amount: int, member_id: str | None, month: str | None) -> dict[str, Any] | None:
        """Why `amount` may not be spent (a member's limit first: it is theirs to know; then the account's cap),
        or None."""
        limited = self.over_limit(amount, member_id, month)
        if limited is not None:
            return {"reason": "member limit", **limited}
        cap = self.usage.limit
        if cap is not None and month is not None and self.used(month) + amount > cap:
            return {"reason": "usage cap", "member_id": member_id, "limit": cap, "used": self.used(month)}
        if amount > self.available:
            return {"reason": "insufficient credits", "member_id": member_id, "limit": None, "used": None}
        return None

    def claw_back(
        self, stamp: Stamp, *, amount: int, lot_source: str, description: str, metadata: dict[str, Any]
    ) -> None:
        """Take back refunded credits from the lot their purchase made: as many as it has left free,
        recording what could not be taken (spent already, or set aside by a hold)."""
        check_positive(amount)
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
        member_id: str | None = None,
        month: str | None = None,
    ) -> None:
        self.trigger_event(
            self.Debited,
            member_id=member_id,
            month=month,
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

    # -- what other services' events ask for, in whatever order they arrive ----------------------

    def purchase(
        self, stamp: Stamp, *, credits: int, refunded_first: bool, description: str, metadata: dict[str, Any],
        value_cents: int, currency: str | None,
    ) -> None:  # fmt: skip
        if refunded_first or credits == 0:
            # Its refund came first and took nothing: granting now would give away refunded credits.
            self.note(stamp, reason="purchase refunded before it was granted")
        else:
            self.grant(
                stamp, entry_type="PURCHASE", amount=credits, description=description, metadata=metadata,
                value_cents=value_cents, currency=currency,
            )  # fmt: skip

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
        recharge = self.recharge_threshold
        recharge = recharge if recharge is not None and available_before >= recharge > after else None
        if low is not None or recharge is not None:
            self.trigger_event(
                self.BalanceLow, available=after, threshold=low, recharge_threshold=recharge,
                cause_version=self.version, **stamp.recorded(),
            )  # fmt: skip

    def set_recharge_threshold(self, stamp: Stamp, *, threshold: int | None, at: datetime) -> None:
        """Apply payments' auto-recharge threshold unless a newer one was applied already."""
        current = self.recharge_at
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
