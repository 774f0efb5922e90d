"""What each event of a credit account records, and how it changes the account's state.

The account (domain.py) names each stored one inside itself (`CreditAccount.Granted`, ...): those names are
the events' stored topics, by which the history is read back and the relays filter it, so the classes here
are their bodies and the ones there their names. The abstract ones (Stamped, BalanceChanged, HoldClosed,
StatusChanged) are never stored: code asks `isinstance` of these.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Protocol, cast

from eventsourcing.domain import Aggregate

from services.ledger.values import Hold, Lot, Portions, in_spending_order


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

    def portions(self, amount: int) -> Portions: ...
    def spend(self, portions: Portions) -> None: ...


def _state(aggregate: Aggregate) -> AccountState:
    return cast(AccountState, aggregate)


class Upcast:
    """Events (and snapshots) stored before a field was added are read as if they had it: each class names
    in `ADDED` the fields it gained after it was first stored and what their absence meant, and version 1
    state (anything stored before versions were recorded) is brought up to version 2 by giving it those.
    `setdefault`, so state stored after a field came but before versions did keeps what it recorded."""

    class_version: ClassVar[int] = 2
    ADDED: ClassVar[dict[str, Any]] = {}

    @classmethod
    def upcast_v1_v2(cls, state: dict[str, Any]) -> None:
        for klass in reversed(cls.__mro__):
            for name, absent in vars(klass).get("ADDED", {}).items():
                state.setdefault(name, absent)


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
    ADDED: ClassVar[dict[str, Any]] = {"expires_at": None}  # stored before lots: never expiring
    expires_at: str | None

    def apply(self, aggregate: Aggregate) -> None:
        account = _state(aggregate)
        account.balance = self.balance_after
        expires_at = datetime.fromisoformat(self.expires_at) if self.expires_at else None
        account.lots[str(self.originator_version)] = Lot(self.idempotency_key, self.amount, self.amount, expires_at)


class Debited(BalanceChanged):
    ADDED: ClassVar[dict[str, Any]] = {"lots": None}  # stored before lots: taken in spending order
    shortfall: int  # what a claw-back could not take
    lots: Portions | None

    def apply(self, aggregate: Aggregate) -> None:
        account = _state(aggregate)
        account.balance = self.balance_after
        account.spend(self.lots or account.portions(self.amount))


class Expired(BalanceChanged):
    """The unspent remainder of a lot left the balance at its expiry."""

    lot_id: str
    expires_at: str

    def apply(self, aggregate: Aggregate) -> None:
        account = _state(aggregate)
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
    ADDED: ClassVar[dict[str, Any]] = {"lots": None}  # stored before lots: set aside in spending order
    lots: Portions | None

    def apply(self, aggregate: Aggregate) -> None:
        account = _state(aggregate)
        portions = self.lots or account.portions(self.amount)
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
        account = _state(aggregate)
        account.reserved -= account.reservations.pop(self.reservation_id).amount
        account.balance = self.balance_after


class Captured(HoldClosed):
    ADDED: ClassVar[dict[str, Any]] = {"lots": None}  # what it took from each lot: stored before lots, unknown
    released: int  # the rest of the hold, given back
    description: str
    lots: Portions | None

    def apply(self, aggregate: Aggregate) -> None:
        account = _state(aggregate)
        hold = account.reservations.pop(self.reservation_id)
        account.reserved -= hold.amount
        account.balance = self.balance_after
        account.spend(self.lots or in_spending_order(hold.lots, self.amount, account.lots))


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
