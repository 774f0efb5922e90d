"""What the ledger's doors take and give: request bodies (shared by HTTP and NATS request/reply, so
both hold to one set of rules) and the answers' shapes, for OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared.contracts.ledger import EntryType
from shared.inputs import TEXT_PATTERN, JsonObject, MediumText, ShortText, Whole

Amount = Annotated[int, Field(strict=True, gt=0, le=1_000_000), Whole]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=TEXT_PATTERN)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DebitIn(Body):
    amount: Amount
    description: MediumText = ""
    metadata: JsonObject = Field(default_factory=dict, description="free-form JSON: at most 16 levels and 4 KB")


class GrantIn(DebitIn):
    type: Literal["PURCHASE", "BONUS", "REFUND", "ADMIN_ADJUSTMENT"]


class ReservationIn(Body):
    amount: Amount
    job_id: ShortText | None = None
    ttl_seconds: Annotated[int, Field(strict=True, ge=1, le=86_400), Whole] | None = None


class CaptureIn(Body):
    amount: Annotated[int, Field(strict=True, ge=0, le=1_000_000), Whole] | None = Field(
        default=None, description="omit to capture the whole hold"
    )
    description: MediumText = ""


class ReleaseIn(Body):
    reason: ShortText = "released"


class AdjustmentIn(Body):
    amount: Annotated[
        int, Field(strict=True, ge=-1_000_000, le=1_000_000, json_schema_extra={"not": {"const": 0}}), Whole
    ]
    reason: Reason

    @field_validator("amount")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("an adjustment of 0 changes nothing")
        return value


class AccountPublic(BaseModel):
    user_id: str
    balance: int
    reserved: int
    available: int
    active: bool


class CanSpendPublic(BaseModel):
    user_id: str
    amount: int
    balance: int
    available: int
    can_spend: bool


class EntryPublic(BaseModel):
    """One line of the credit log: a positive amount added credits, a negative one used them."""

    id: str
    user_id: str
    version: int
    type: EntryType
    amount: int
    balance_after: int
    shortfall: int
    description: str
    metadata: dict[str, Any]
    idempotency_key: str
    created_at: datetime


class HoldPublic(BaseModel):
    """A hold on credits for a job, and what became of it."""

    id: str
    reservation_id: str
    user_id: str
    job_id: str | None
    amount: int
    balance: int
    reserved: int
    available: int
    created_at: datetime
    expires_at: datetime | None = None
    captured: int | None = None
    released: int | None = None
    reason: str | None = None


class EntriesPage(BaseModel):
    user_id: str
    entries: list[EntryPublic]
    next_cursor: str | None
