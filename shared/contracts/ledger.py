"""Events on the LEDGER stream: the append-only credit history every balance is audited from."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from shared.contracts.envelope import EventData
from shared.inputs import JsonObject, MediumText, ShortText


class EntryType(StrEnum):
    PURCHASE = "PURCHASE"
    USAGE = "USAGE"
    REFUND = "REFUND"
    BONUS = "BONUS"
    ADMIN_ADJUSTMENT = "ADMIN_ADJUSTMENT"


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


class CreditsGranted(_Entry):
    type = "ledger.credits.granted"


class CreditsDebited(_Entry):
    type = "ledger.credits.debited"
    # A claw-back that found fewer credits than it wanted records what it could not take.
    shortfall: int = 0


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
