"""Events on the LEDGER stream: the append-only credit history every balance is audited from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from shared.contracts.envelope import EventData
from shared.inputs import JsonObject, MediumText, ShortText


class EntryType(StrEnum):
    PURCHASE = "PURCHASE"
    USAGE = "USAGE"
    REFUND = "REFUND"
    BONUS = "BONUS"
    ADMIN_ADJUSTMENT = "ADMIN_ADJUSTMENT"
    EXPIRED = "EXPIRED"


class _Stamped(EventData):
    """Whose account, and the command behind the event: its idempotency key and what caused it."""

    user_id: ShortText
    idempotency_key: MediumText
    cause_id: ShortText | None


class _Hold(_Stamped):
    reservation_id: ShortText
    job_id: ShortText | None


class _Refused(_Stamped):
    """Credits asked for and refused, with what was there."""

    amount: int
    available: int
    # The balance when refused (added later, so older events lack it).
    balance: int | None = None
    reason: MediumText
    # An organization's member who asked, and, refused for their monthly limit, it and what they used of it.
    member_id: ShortText | None = None
    limit: int | None = None
    used: int | None = None


class _Entry(_Stamped):
    entry_type: EntryType
    # Zero only for a claw-back that found nothing left to take (its shortfall says how much).
    amount: int = Field(ge=0)
    balance_after: int = Field(ge=0)
    description: MediumText
    metadata: JsonObject
    # What may be spent after it (balance less holds); older events lack it.
    available_after: int | None = None


# What an entry took from each lot (by lot id): spending order is the ledger's, readers only add it up.
Portions = dict[ShortText, Annotated[int, Field(ge=0)]]


class CreditsGranted(_Entry):
    type = "ledger.credits.granted"
    # When the credit of this grant (its lot) expires; None: never (older events lack it too).
    expires_at: datetime | None = None
    # The lot this grant made (older events lack it).
    lot_id: ShortText | None = None
    # What the lot's credits were sold for, all of them, in minor units of `currency`: its price per credit is
    # value_cents / amount. 0 (and no currency) for credits given, not sold, and in events from before prices.
    value_cents: int = Field(default=0, ge=0)
    currency: ShortText | None = None


class CreditsExpired(_Entry):
    """The unspent remainder of a lot left the balance at its expiry."""

    type = "ledger.credits.expired"
    lot_id: ShortText
    expires_at: datetime


class CreditsDebited(_Entry):
    type = "ledger.credits.debited"
    # A claw-back that found fewer credits than it wanted records what it could not take.
    shortfall: int = 0
    lots: Portions | None = None  # older events lack it
    member_id: ShortText | None = None  # the organization's member who spent it (None: the account's owner)


class CreditsReserved(_Hold):
    type = "ledger.credits.reserved"
    amount: int = Field(gt=0)
    expires_at: datetime
    balance: int
    reserved_after: int
    member_id: ShortText | None = None  # the organization's member who placed it


class CreditsCaptured(_Hold):
    type = "ledger.credits.captured"
    amount: int = Field(ge=0)
    released: int = Field(ge=0)
    balance_after: int = Field(ge=0)
    reserved_after: int
    description: MediumText
    lots: Portions | None = None  # what the capture took from each lot (older events lack it)
    member_id: ShortText | None = None  # whose hold it was: the organization's member who spent it


class CreditsReleased(_Hold):
    type = "ledger.credits.released"
    amount: int = Field(ge=0)
    reason: MediumText
    balance: int
    reserved_after: int


class ReservationRejected(_Hold, _Refused):
    type = "ledger.credits.reservation_rejected"


class BalanceLow(_Stamped):
    """Available credit crossed below the low-balance notification threshold, the user's auto-recharge
    threshold, or both (each says so when it was crossed)."""

    type = "ledger.balance.low"
    available: int
    threshold: int | None  # the notification threshold, when crossed
    recharge_threshold: int | None = None  # the user's auto-recharge threshold, when crossed


class CreditsExpiring(_Stamped):
    """Credit of a lot expires soon (within the warning period) unless it is spent."""

    type = "ledger.credits.expiring"
    lot_id: ShortText
    remaining: int = Field(ge=0)
    expires_at: datetime


class DebitRejected(_Refused):
    type = "ledger.debit.rejected"


class MemberLimitSet(_Stamped):
    """An organization's admin set how much a member may spend of its account per calendar month (UTC)."""

    type = "ledger.credits.limit_set"
    member_id: ShortText
    monthly_credits: int | None = Field(ge=0)  # None: no limit
    admin_id: ShortText


class UsageCapSet(_Stamped):
    """The account's owner (or its organization's admin) capped what it may spend per calendar month (UTC)."""

    type = "ledger.credits.cap_set"
    monthly_credits: int | None = Field(ge=0)  # None: no cap
    set_by: ShortText


@dataclass(frozen=True)
class CreditEntry:
    """A line of the credit log, as the ledger answers it and every read model shows it: a positive
    amount added credits, a negative one used them."""

    entry_type: EntryType
    amount: int
    balance_after: int
    description: str
    metadata: dict[str, Any]
    member_id: str | None = None  # on an organization's account: the member who spent it


def credit_entry(body: EventData) -> CreditEntry | None:
    """The credit-log line an event writes, or None (holds, refusals and empty captures write none)."""
    match body:
        case CreditsGranted():
            return CreditEntry(body.entry_type, body.amount, body.balance_after, body.description, body.metadata)
        case CreditsDebited():
            return CreditEntry(
                body.entry_type, -body.amount, body.balance_after, body.description, body.metadata, body.member_id
            )
        case CreditsExpired():
            return CreditEntry(body.entry_type, -body.amount, body.balance_after, body.description, body.metadata)
        case CreditsCaptured(amount=taken) if taken > 0:
            # A hold's capture is spending: USAGE, with the hold it came from.
            metadata = {"reservation_id": body.reservation_id, "job_id": body.job_id}
            return CreditEntry(EntryType.USAGE, -taken, body.balance_after, body.description, metadata, body.member_id)
        case _:
            return None
