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


class _Entry(EventData):
    user_id: ShortText
    entry_type: EntryType
    # Zero only for a claw-back that found nothing left to take (its shortfall says how much).
    amount: int = Field(ge=0)
    balance_after: int = Field(ge=0)
    description: MediumText
    metadata: JsonObject
    idempotency_key: MediumText
    cause_id: ShortText | None
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


class CreditsReserved(EventData):
    type = "ledger.credits.reserved"
    user_id: ShortText
    reservation_id: ShortText
    amount: int = Field(gt=0)
    job_id: ShortText | None
    expires_at: datetime
    balance: int
    reserved_after: int
    idempotency_key: MediumText
    cause_id: ShortText | None


class CreditsCaptured(EventData):
    type = "ledger.credits.captured"
    user_id: ShortText
    reservation_id: ShortText
    job_id: ShortText | None
    amount: int = Field(ge=0)
    released: int = Field(ge=0)
    balance_after: int = Field(ge=0)
    reserved_after: int
    description: MediumText
    idempotency_key: MediumText
    cause_id: ShortText | None
    lots: Portions | None = None  # what the capture took from each lot (older events lack it)


class CreditsReleased(EventData):
    type = "ledger.credits.released"
    user_id: ShortText
    reservation_id: ShortText
    job_id: ShortText | None
    amount: int = Field(ge=0)
    reason: MediumText
    balance: int
    reserved_after: int
    idempotency_key: MediumText
    cause_id: ShortText | None


class ReservationRejected(EventData):
    type = "ledger.credits.reservation_rejected"
    user_id: ShortText
    reservation_id: ShortText
    job_id: ShortText | None
    amount: int
    available: int
    # The balance when refused (added later, so older events lack it).
    balance: int | None = None
    reason: MediumText
    idempotency_key: MediumText
    cause_id: ShortText | None


class BalanceLow(EventData):
    """Available credit crossed below the low-balance notification threshold, the user's auto-recharge
    threshold, or both (each says so when it was crossed)."""

    type = "ledger.balance.low"
    user_id: ShortText
    available: int
    threshold: int | None  # the notification threshold, when crossed
    recharge_threshold: int | None = None  # the user's auto-recharge threshold, when crossed
    idempotency_key: MediumText
    cause_id: ShortText | None


class CreditsExpiring(EventData):
    """Credit of a lot expires soon (within the warning period) unless it is spent."""

    type = "ledger.credits.expiring"
    user_id: ShortText
    lot_id: ShortText
    remaining: int = Field(ge=0)
    expires_at: datetime
    idempotency_key: MediumText
    cause_id: ShortText | None


class DebitRejected(EventData):
    type = "ledger.debit.rejected"
    user_id: ShortText
    amount: int
    available: int
    # The balance when refused (added later, so older events lack it).
    balance: int | None = None
    reason: MediumText
    idempotency_key: MediumText
    cause_id: ShortText | None


@dataclass(frozen=True)
class CreditEntry:
    """A line of the credit log, as the ledger answers it and every read model shows it: a positive
    amount added credits, a negative one used them."""

    entry_type: EntryType
    amount: int
    balance_after: int
    description: str
    metadata: dict[str, Any]


def credit_entry(body: EventData) -> CreditEntry | None:
    """The credit-log line an event writes, or None (holds, refusals and empty captures write none)."""
    match body:
        case CreditsGranted():
            return CreditEntry(body.entry_type, body.amount, body.balance_after, body.description, body.metadata)
        case CreditsDebited() | CreditsExpired():
            return CreditEntry(body.entry_type, -body.amount, body.balance_after, body.description, body.metadata)
        case CreditsCaptured(amount=taken) if taken > 0:
            # A hold's capture is spending: USAGE, with the hold it came from.
            metadata = {"reservation_id": body.reservation_id, "job_id": body.job_id}
            return CreditEntry(EntryType.USAGE, -taken, body.balance_after, body.description, metadata)
        case _:
            return None
