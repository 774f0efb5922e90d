"""What each event of a credit account records, and how it changes the account's state.

The account (domain.py) names each stored one inside itself (`CreditAccount.Granted`, ...): those names are
the events' stored topics, by which the history is read back and the relays filter it, so the classes here
are their bodies and the ones there their names. The abstract ones (Stamped, BalanceChanged, HoldClosed,
StatusChanged) are never stored: code asks `isinstance` of these.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar, Protocol, cast

from eventsourcing.domain import Aggregate

from services.ledger.values import Allowance, Hold, Lot, Portions, in_spending_order


class AccountState(Protocol):
    """What events change of an account (domain.py's CreditAccount)."""

    balance: int
    reserved: int
    active: bool
    status_at: str | None
    reservations: dict[str, Hold]
    lots: dict[str, Lot]
    recharge_threshold: int | None
    recharge_at: str | None
    members: dict[str, Allowance]
    usage: Allowance

    def portions(self, amount: int) -> Portions: ...
    def spend(self, portions: Portions) -> None: ...


def _state(aggregate: Aggregate) -> AccountState:
    return cast(AccountState, aggregate)


class Upcast:
    """Events (and snapshots) stored before a field was added are read as if they had it: each class names
    in `ADDED` the fields it gained after it was first stored and what their absence meant, and state of an
    older version (1: anything stored before versions were recorded; 2: before organizations' members; 3: before
    lots' prices) is
    brought up by giving it those. `setdefault`, so state that recorded a field keeps what it recorded; a
    copy, so no two accounts share the mutable default."""

    class_version: ClassVar[int] = 4
    ADDED: ClassVar[dict[str, Any]] = {}

    @classmethod
    def upcast_v1_v2(cls, state: dict[str, Any]) -> None:
        for klass in reversed(cls.__mro__):
            for name, absent in vars(klass).get("ADDED", {}).items():
                state.setdefault(name, copy.copy(absent))

    @classmethod
    def upcast_v2_v3(cls, state: dict[str, Any]) -> None:
        cls.upcast_v1_v2(state)

    @classmethod
    def upcast_v3_v4(cls, state: dict[str, Any]) -> None:
        cls.upcast_v1_v2(state)


class Keyed(Upcast, Aggregate.Event):
    """An event that records only the key and meaning of the command behind it (no trace)."""

    ADDED: ClassVar[dict[str, Any]] = {"cause_id": None}
    idempotency_key: str
    fingerprint: str
    cause_id: str | None


class Stamped(Upcast, Aggregate.Event):
    ADDED: ClassVar[dict[str, Any]] = {"cause_id": None, "correlation_id": None, "traceparent": None}
    idempotency_key: str
    fingerprint: str
    cause_id: str | None
    correlation_id: str | None
    traceparent: str | None


class BalanceChanged(Stamped):
    # None: stored before it was recorded; the stream then cannot say what is available after.
    ADDED: ClassVar[dict[str, Any]] = {"reserved_after": None}
    entry_type: str
    amount: int
    balance_after: int
    reserved_after: int | None
    description: str
    metadata: dict[str, Any]

    def apply(self, aggregate: Aggregate) -> None:
        _state(aggregate).balance = self.balance_after


class Granted(BalanceChanged):
    # Stored before lots: never expiring; before prices: worth nothing (no sale of it was recorded).
    ADDED: ClassVar[dict[str, Any]] = {"expires_at": None, "value_cents": 0, "currency": None}
    expires_at: str | None
    value_cents: int  # what the lot's credits were sold for, all of them (0: given, not sold)
    currency: str | None  # of value_cents (None when nothing was paid)

    def apply(self, aggregate: Aggregate) -> None:
        account = _state(aggregate)
        account.balance = self.balance_after
        expires_at = datetime.fromisoformat(self.expires_at) if self.expires_at else None
        account.lots[str(self.originator_version)] = Lot(self.idempotency_key, self.amount, self.amount, expires_at)


def _count(account: AccountState, member_id: str | None, month: str | None, amount: int) -> None:
    """Spending counts against the account's cap in its month, and a member's against their limit too."""
    if month is None or not amount:
        return
    account.usage = account.usage.spent(month, amount)
    if member_id is not None:
        account.members[member_id] = account.members.get(member_id, Allowance()).spent(month, amount)


class Debited(BalanceChanged):
    # Stored before lots: taken in spending order; before organizations: no member spent it.
    ADDED: ClassVar[dict[str, Any]] = {"lots": None, "member_id": None, "month": None}
    shortfall: int  # what a claw-back could not take
    lots: Portions | None
    member_id: str | None  # the organization's member who spent it
    month: str | None  # the month it counts in against their limit

    def apply(self, aggregate: Aggregate) -> None:
        account = _state(aggregate)
        account.balance = self.balance_after
        account.spend(self.lots or account.portions(self.amount))
        _count(account, self.member_id, self.month, self.amount)


class Expired(BalanceChanged):
    """The unspent remainder of a lot left the balance at its expiry."""

    lot_id: str
    expires_at: str

    def apply(self, aggregate: Aggregate) -> None:
        account = _state(aggregate)
        account.balance = self.balance_after
        account.spend({self.lot_id: self.amount})


class Refused(Stamped):
    """Credits asked and refused: for want of them, or past the member's monthly limit (then `limit` and
    what they had `used` of it, holds included)."""

    ADDED: ClassVar[dict[str, Any]] = {"member_id": None, "limit": None, "used": None}
    amount: int
    balance_after: int
    available: int
    reason: str
    member_id: str | None
    limit: int | None
    used: int | None


class DebitRejected(Refused):
    pass


class Reserved(Stamped):
    reservation_id: str
    amount: int
    job_id: str | None
    expires_at: str
    balance_after: int
    reserved_after: int
    # Stored before lots: set aside in spending order; before organizations: placed by no member.
    ADDED: ClassVar[dict[str, Any]] = {"lots": None, "member_id": None}
    lots: Portions | None
    member_id: str | None

    def apply(self, aggregate: Aggregate) -> None:
        account = _state(aggregate)
        portions = self.lots or account.portions(self.amount)
        hold = Hold(self.amount, self.job_id, datetime.fromisoformat(self.expires_at), portions, self.member_id)
        account.reservations[self.reservation_id] = hold
        account.reserved += self.amount


class ReservationRejected(Refused):
    reservation_id: str
    job_id: str | None


class HoldClosed(Stamped):
    reservation_id: str
    job_id: str | None
    amount: int  # captured, or released
    balance_after: int
    reserved_after: int

    def apply(self, aggregate: Aggregate) -> None:
        account = _state(aggregate)
        account.reserved -= account.reservations.pop(self.reservation_id).amount
        account.balance = self.balance_after


class Captured(HoldClosed):
    # What it took from each lot (stored before lots: unknown); whose hold it was, counted in which month.
    ADDED: ClassVar[dict[str, Any]] = {"lots": None, "member_id": None, "month": None}
    released: int  # the rest of the hold, given back
    description: str
    lots: Portions | None
    member_id: str | None
    month: str | None

    def apply(self, aggregate: Aggregate) -> None:
        account = _state(aggregate)
        hold = account.reservations.pop(self.reservation_id)
        account.reserved -= hold.amount
        account.balance = self.balance_after
        account.spend(self.lots or in_spending_order(hold.lots, self.amount, account.lots))
        _count(account, self.member_id, self.month, self.amount)


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
        account = _state(aggregate)
        account.recharge_threshold, account.recharge_at = self.threshold, self.at


class MemberLimitSet(Stamped):
    """An organization's admin set how much a member may spend of its account each month (None: no limit)."""

    member_id: str
    monthly_credits: int | None
    admin_id: str

    def apply(self, aggregate: Aggregate) -> None:
        account = _state(aggregate)
        account.members[self.member_id] = replace(
            account.members.get(self.member_id, Allowance()), limit=self.monthly_credits
        )


class UsageCapSet(Stamped):
    """The account's owner (or its organization's admin) capped what it may spend each month (None: no cap)."""

    monthly_credits: int | None
    set_by: str

    def apply(self, aggregate: Aggregate) -> None:
        account = _state(aggregate)
        account.usage = replace(account.usage, limit=self.monthly_credits)


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
        account = _state(aggregate)
        account.active, account.status_at = self.active, self.at


class Deactivated(StatusChanged):
    active = False


class Reactivated(StatusChanged):
    active = True
