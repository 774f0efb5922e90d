"""What the ledger's doors take and give: request bodies (shared by HTTP and NATS request/reply, so
both hold to one set of rules) and the answers' shapes, for OpenAPI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared.contracts.ledger import EntryType
from shared.inputs import TEXT_PATTERN, JsonObject, MediumText, Moment, ShortText, Whole

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
    expires_at: Moment | None = Field(
        default=None, description="when the unspent part of these credits expires (omit: never); in the future"
    )

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(UTC):
            raise ValueError("a grant that expires must expire in the future")
        return value


class ReservationIn(Body):
    # No job id: only media's events place a job's hold (services/ledger/handlers.py). A caller naming one
    # could make a job's completion capture its own small hold in place of the job's.
    amount: Amount
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


class MemberLimitIn(Body):
    monthly_credits: Annotated[int, Field(strict=True, ge=0, le=1_000_000), Whole] | None = Field(
        description="what the member may spend of the organization's account per calendar month (UTC); null: no limit"
    )


class MemberLimitPublic(BaseModel):
    org_id: str
    account_id: str
    member_id: str  # the member's user id
    clerk_user_id: str
    monthly_credits: int | None
    used: int  # this month, holds included


class UsageCapIn(Body):
    monthly_usage_credits: Annotated[int, Field(strict=True, ge=0, le=1_000_000), Whole] | None = Field(
        description="what the account may spend per calendar month (UTC), holds included; null: no cap"
    )


class UsageCapPublic(BaseModel):
    account_id: str
    monthly_usage_credits: int | None
    month: str  # YYYY-MM (UTC)
    used: int  # spent this month and held now


class LotPublic(BaseModel):
    """Credit from one grant: spent soonest-expiring first, non-expiring last."""

    id: str
    amount: int  # granted
    remaining: int  # not yet spent or expired
    held: int  # of the remaining, set aside by holds (never expires while held)
    expires_at: datetime | None


class AccountPublic(BaseModel):
    user_id: str
    balance: int
    reserved: int
    available: int
    active: bool
    lots: list[LotPublic]  # in spending order
    recharge_threshold: int | None  # where payments has the ledger watch for auto-recharge


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
    member_id: str | None = None  # on an organization's account: the member who spent it
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
