"""Commands: typed data, and which account method each one runs (COMMAND_HANDLERS).

HTTP, NATS request/reply and inbound events only build commands; the application applies them in
batches. A command's idempotency key is chosen by its caller (prefixed `client:`) or derived from the
event that caused it (`payment:<tx>`, `job:<id>:reserve`, ...); its fingerprint is a hash of what it
means (its fields, without when it was asked or who caused it), so the same key sent with another
meaning is a conflict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, ClassVar

from services.ledger.domain import CreditAccount
from services.ledger.values import Stamp, month_of
from shared import clock
from shared.contracts import derive_id
from shared.credits import WELCOME_BONUS
from shared.idempotency import fingerprint
from shared.telemetry import current_traceparent

# Whether the account has already seen an idempotency key: how an event that arrives out of order
# learns what its siblings did (a refund asks whether its purchase was granted).
Seen = Callable[[str], bool]
NOT_MEANING = frozenset({"key", "cause_id", "correlation_id", "traceparent", "asked_at"})
# Fields commands gained after their fingerprints were first recorded: left out while unset, so a request
# asked before they existed (a redelivered event, a client's retry across an upgrade) means what it meant.
ADDED_SINCE = frozenset({"member_id"})


@dataclass(frozen=True, kw_only=True)
class Command:
    user_id: str
    key: str
    cause_id: str | None = None
    correlation_id: str | None = None
    # The trace the command was asked in (an HTTP request's, a consumed event's): built where it is asked.
    traceparent: str | None = dataclasses.field(default_factory=current_traceparent)

    # Whether it may open an account that does not exist yet (else: 404).
    opens_account: ClassVar[bool] = True
    # Fields that say when or how it was asked, not what: a retry may differ in them.
    circumstances: ClassVar[frozenset[str]] = frozenset()

    @cached_property  # a frozen dataclass still has a __dict__ to cache in
    def fingerprint(self) -> str:
        meaning = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in NOT_MEANING | self.circumstances
            and not (f.name in ADDED_SINCE and getattr(self, f.name) is None)
        }
        return fingerprint(type(self).__name__, meaning)

    def related_keys(self) -> tuple[str, ...]:
        """Other keys it asks the account about (`Seen`), so a batch can fetch them with its own."""
        return ()

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.key, self.fingerprint, self.cause_id, self.correlation_id, self.traceparent)


# -- what callers ask directly ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Entry(Command):
    entry_type: str
    amount: int
    description: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class _Spending(Command):
    """What spends credit: when an organization's member spends its account (`member_id`), their monthly
    limit applies, measured in the month it is asked (when, not what: a retry next month is the same ask)."""

    member_id: str | None = None
    asked_at: datetime = dataclasses.field(default_factory=clock.now)

    @property
    def month(self) -> str:
        return month_of(self.asked_at)


@dataclass(frozen=True, kw_only=True)
class Grant(_Entry):
    expires_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Debit(_Entry, _Spending):
    opens_account = False


@dataclass(frozen=True, kw_only=True)
class Adjust(Command):
    """An operator's correction: credits in or out, whole or refused, with who and why."""

    opens_account = False
    amount: int  # positive adds, negative takes
    reason: str
    admin_id: str


@dataclass(frozen=True, kw_only=True)
class SetMemberLimit(Command):
    """An organization's admin sets a member's monthly limit on its account (None: no limit)."""

    opens_account = False
    member_id: str
    monthly_credits: int | None
    admin_id: str


@dataclass(frozen=True, kw_only=True)
class SetUsageCap(Command):
    """The account's owner (or its organization's admin) caps its spending per month (None: no cap)."""

    opens_account = False
    monthly_credits: int | None
    set_by: str


@dataclass(frozen=True, kw_only=True)
class Reserve(_Spending):
    """A caller's own hold (never a media job's: HoldForJob places those)."""

    opens_account = False
    circumstances = frozenset({"expires_at"})  # a retry a second later is the same request
    reservation_id: str
    amount: int
    ttl_seconds: int
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class _OnHold(Command):
    """What is asked of a hold the account has (so of an account that exists)."""

    opens_account = False
    reservation_id: str


@dataclass(frozen=True, kw_only=True)
class Capture(_OnHold, _Spending):
    amount: int | None  # None: the whole hold
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class Release(_OnHold):
    reason: str


@dataclass(frozen=True, kw_only=True)
class Expire(_OnHold):
    circumstances = frozenset({"now"})
    now: datetime


@dataclass(frozen=True, kw_only=True)
class _OnLot(Command):
    """What the sweeper asks of a lot the account has."""

    opens_account = False
    lot_id: str


@dataclass(frozen=True, kw_only=True)
class ExpireLot(_OnLot):
    circumstances = frozenset({"now"})
    now: datetime


@dataclass(frozen=True, kw_only=True)
class WarnExpiring(_OnLot):
    pass


# -- what other services' events ask for -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Welcome(Command):
    """One welcome bonus per account, whichever registration event delivers it and however often."""


@dataclass(frozen=True, kw_only=True)
class SetStatus(Command):
    active: bool
    at: datetime


@dataclass(frozen=True, kw_only=True)
class SetRechargeThreshold(Command):
    threshold: int | None
    at: datetime


@dataclass(frozen=True, kw_only=True)
class Purchase(Command):
    # The transaction fixes its currency: a redelivery of an event from before currencies were recorded here
    # is the same purchase.
    circumstances = frozenset({"currency"})
    transaction_id: str
    credits: int
    package_id: str | None
    amount_cents: int
    currency: str | None = None

    def related_keys(self) -> tuple[str, ...]:
        return (refund_key(self.transaction_id),)


@dataclass(frozen=True, kw_only=True)
class Refund(Command):
    transaction_id: str
    credits: int
    stripe_charge_id: str | None

    def related_keys(self) -> tuple[str, ...]:
        return (payment_key(self.transaction_id),)


@dataclass(frozen=True, kw_only=True)
class Renewal(Command):
    subscription_id: str
    invoice_id: str
    circumstances = frozenset({"amount_cents", "currency"})  # the invoice fixes them, as `currency` above
    credits: int
    expires_at: datetime | None  # the period's end, unless the plan rolls its credits over
    amount_cents: int = 0  # what the invoice charged for the period's credits
    currency: str | None = None


@dataclass(frozen=True, kw_only=True)
class OpenOrganization(Command):
    """An organization's account, opened when identity announces it (empty: it gets no welcome bonus)."""


@dataclass(frozen=True, kw_only=True)
class HoldForJob(_Spending):
    circumstances = frozenset({"expires_at"})
    reservation_id: str
    job_id: str
    cost: int
    expires_at: datetime

    def related_keys(self) -> tuple[str, ...]:
        return (job_key(self.job_id, "capture"), job_key(self.job_id, "release"))


@dataclass(frozen=True, kw_only=True)
class ChargeJob(_Spending):
    job_id: str
    cost: int
    operation: str


@dataclass(frozen=True, kw_only=True)
class EndJob(Command):
    """A job failed or was cancelled: the two share a key, whichever comes first releases."""

    job_id: str
    reason: str


# -- keys -----------------------------------------------------------------------------------------

WELCOME_KEY = "bonus:welcome"
ORG_OPENED_KEY = "org:opened"


def _keyed(prefix: str) -> Callable[[str], str]:
    return lambda value: f"{prefix}:{value}"


# Clients choose their keys freely; the prefix keeps them from ever colliding with the keys the ledger
# derives from events (`payment:<id>`), which would make a real payment look like a retry.
client_key = _keyed("client")
payment_key = _keyed("payment")
promo_grant_key = _keyed("promo")  # one grant per code and account, whatever redelivers it
refund_key = _keyed("refund")
# What the sweeper asks of a hold or a lot whose time is up (or near): any number of sweepers ask under one key.
expire_key = _keyed("expire")
expire_lot_key = _keyed("expire-lot")
expiring_key = _keyed("expiring")


def job_key(job_id: str, step: str) -> str:
    return f"job:{job_id}:{step}"


def reservation_id(user_id: str, key: str) -> str:
    """Derived from the key, so a retried reservation names the same hold."""
    return str(derive_id("reservation", user_id, key))


# -- the registry: which account method each command runs -----------------------------------------


def _grant(a: CreditAccount, c: Grant, _seen: Seen) -> None:
    a.grant(
        c.stamp, entry_type=c.entry_type, amount=c.amount, description=c.description, metadata=c.metadata,
        expires_at=c.expires_at,
    )  # fmt: skip


def _debit(a: CreditAccount, c: Debit, _seen: Seen) -> None:
    a.debit(
        c.stamp, entry_type=c.entry_type, amount=c.amount, description=c.description, metadata=c.metadata,
        member_id=c.member_id, month=c.month,
    )  # fmt: skip


def _set_member_limit(a: CreditAccount, c: SetMemberLimit, _seen: Seen) -> None:
    a.set_member_limit(c.stamp, member_id=c.member_id, monthly_credits=c.monthly_credits, admin_id=c.admin_id)


def _set_usage_cap(a: CreditAccount, c: SetUsageCap, _seen: Seen) -> None:
    a.set_usage_cap(c.stamp, monthly_credits=c.monthly_credits, set_by=c.set_by)


def _open_organization(a: CreditAccount, c: OpenOrganization, _seen: Seen) -> None:
    a.note(c.stamp, reason="organization account opened")


def _adjust(a: CreditAccount, c: Adjust, _seen: Seen) -> None:
    change = a.grant if c.amount > 0 else a.debit
    metadata = {"admin_id": c.admin_id, "reason": c.reason}
    change(c.stamp, entry_type="ADMIN_ADJUSTMENT", amount=abs(c.amount), description=c.reason, metadata=metadata)


def _reserve(a: CreditAccount, c: Reserve, _seen: Seen) -> None:
    a.reserve(
        c.stamp, reservation_id=c.reservation_id, amount=c.amount, job_id=None, expires_at=c.expires_at,
        member_id=c.member_id, month=c.month,
    )  # fmt: skip


def _capture(a: CreditAccount, c: Capture, _seen: Seen) -> None:
    a.check_not_held_for_a_job(c.reservation_id)
    a.capture(c.stamp, reservation_id=c.reservation_id, amount=c.amount, description=c.description, month=c.month)


def _release(a: CreditAccount, c: Release, _seen: Seen) -> None:
    a.check_not_held_for_a_job(c.reservation_id)
    a.release(c.stamp, reservation_id=c.reservation_id, reason=c.reason)


def _expire(a: CreditAccount, c: Expire, _seen: Seen) -> None:
    a.expire(c.stamp, reservation_id=c.reservation_id, now=c.now)


def _expire_lot(a: CreditAccount, c: ExpireLot, _seen: Seen) -> None:
    a.expire_lot(c.stamp, lot_id=c.lot_id, now=c.now)


def _warn_expiring(a: CreditAccount, c: WarnExpiring, _seen: Seen) -> None:
    a.warn_expiring(c.stamp, lot_id=c.lot_id)


def _welcome(a: CreditAccount, c: Welcome, _seen: Seen) -> None:
    a.grant(c.stamp, entry_type="BONUS", amount=WELCOME_BONUS, description="Welcome bonus")


def _set_status(a: CreditAccount, c: SetStatus, _seen: Seen) -> None:
    a.set_active(c.stamp, active=c.active, at=c.at)


def _set_recharge_threshold(a: CreditAccount, c: SetRechargeThreshold, _seen: Seen) -> None:
    a.set_recharge_threshold(c.stamp, threshold=c.threshold, at=c.at)


def _purchase(a: CreditAccount, c: Purchase, seen: Seen) -> None:
    metadata = {"transaction_id": c.transaction_id, "package_id": c.package_id, "amount_cents": c.amount_cents}
    description = f"Purchase of {c.credits} credits"
    refunded = seen(refund_key(c.transaction_id))
    a.purchase(
        c.stamp, credits=c.credits, refunded_first=refunded, description=description, metadata=metadata,
        value_cents=c.amount_cents, currency=c.currency,
    )  # fmt: skip


def _refund(a: CreditAccount, c: Refund, seen: Seen) -> None:
    metadata = {"transaction_id": c.transaction_id, "stripe_charge_id": c.stripe_charge_id}
    description = f"Refund of {c.credits} purchased credits"
    purchase = payment_key(c.transaction_id)
    a.refund(
        c.stamp, credits=c.credits, purchase_key=purchase, purchase_granted=seen(purchase), description=description,
        metadata=metadata,
    )  # fmt: skip


def _renewal(a: CreditAccount, c: Renewal, _seen: Seen) -> None:
    metadata = {"subscription_id": c.subscription_id, "invoice_id": c.invoice_id}
    description = f"Subscription: {c.credits} credits"
    a.grant(
        c.stamp, entry_type="PURCHASE", amount=c.credits, description=description, metadata=metadata,
        expires_at=c.expires_at, value_cents=c.amount_cents, currency=c.currency,
    )  # fmt: skip


def _hold_for_job(a: CreditAccount, c: HoldForJob, seen: Seen) -> None:
    settled = seen(job_key(c.job_id, "capture")) or seen(job_key(c.job_id, "release"))
    a.hold_for_job(
        c.stamp,
        reservation_id=c.reservation_id,
        job_id=c.job_id,
        cost=c.cost,
        expires_at=c.expires_at,
        job_settled=settled,
        member_id=c.member_id,
        month=c.month,
    )


def _charge_job(a: CreditAccount, c: ChargeJob, _seen: Seen) -> None:
    a.charge_job(c.stamp, job_id=c.job_id, cost=c.cost, operation=c.operation, member_id=c.member_id, month=c.month)


def _end_job(a: CreditAccount, c: EndJob, _seen: Seen) -> None:
    a.end_job(c.stamp, job_id=c.job_id, reason=c.reason)


# Every command type and the one account method it runs (which triggers exactly one event or raises).
COMMAND_HANDLERS: dict[type[Command], Callable[[CreditAccount, Any, Seen], None]] = {
    Grant: _grant,
    Debit: _debit,
    Adjust: _adjust,
    SetMemberLimit: _set_member_limit,
    SetUsageCap: _set_usage_cap,
    OpenOrganization: _open_organization,
    Reserve: _reserve,
    Capture: _capture,
    Release: _release,
    Expire: _expire,
    ExpireLot: _expire_lot,
    WarnExpiring: _warn_expiring,
    Welcome: _welcome,
    SetStatus: _set_status,
    SetRechargeThreshold: _set_recharge_threshold,
    Purchase: _purchase,
    Refund: _refund,
    Renewal: _renewal,
    HoldForJob: _hold_for_job,
    ChargeJob: _charge_job,
    EndJob: _end_job,
}
