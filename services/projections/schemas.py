"""What the user's reads answer: the shapes of the profile, credits and dashboard (and of the account's
figures, which the live stream sends too), for OpenAPI."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field, computed_field

from shared import finance


class CreditEntry(BaseModel):
    id: str
    type: str
    amount: int
    balance_after: int
    description: str
    metadata: dict[str, Any]
    created_at: datetime
    member_id: str | None = None  # on an organization's account: the member who spent it

    @classmethod
    def of(cls, row: dict[str, Any]) -> CreditEntry:
        return cls(**{k: v for k, v in row.items() if k != "seq"})


class CreditsResponse(BaseModel):
    user_id: str
    balance: int
    reserved: int | None = Field(description="held for running jobs (now only: null for a past moment)")
    available: int | None = Field(description="balance less reserved (now only: null for a past moment)")
    as_of: datetime | None = Field(default=None, description="the moment asked for with ?at=, if any")
    history: list[CreditEntry]
    next_cursor: str | None


class Profile(BaseModel):
    id: str
    clerk_id: str
    email: str
    first_name: str | None
    last_name: str | None
    avatar: str | None
    is_active: bool
    registered_at: datetime


class Account(BaseModel):
    balance: int
    reserved: int
    available: int

    @classmethod
    def of(cls, row: dict[str, Any] | None) -> Account:
        """From the balances row (none yet: an account of nothing)."""
        balance, reserved = (row["balance"], row["reserved"]) if row else (0, 0)
        return cls(balance=balance, reserved=reserved, available=balance - reserved)


class Transaction(BaseModel):
    id: str
    type: str  # CREDIT_PURCHASE | SUBSCRIPTION
    status: str  # PENDING | COMPLETED | FAILED | CANCELLED | REFUNDED
    amount: int  # cents
    currency: str
    credits: int
    description: str
    stripe_payment_intent_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class SubscriptionView(BaseModel):
    id: str
    plan_id: str | None
    status: str  # ACTIVE | PAST_DUE | CANCELLED
    credits: int | None
    amount_cents: int | None
    current_period_end: datetime | None
    updated_at: datetime


class Counts(BaseModel):
    images: int
    videos: int
    transactions: int


class UserProfile(BaseModel):
    """The user with everything related (the seed's getUserWithData)."""

    user: Profile
    account: Account
    counts: Counts
    transactions: list[Transaction]
    subscription: SubscriptionView | None


class Activity(BaseModel):
    kind: str
    notification: bool
    message: str
    data: dict[str, Any]
    occurred_at: datetime


class UsageDay(BaseModel):
    day: date
    operation: str  # a media operation, or `other` for a direct debit
    credits: int
    count: int


class Expiring(BaseModel):
    lot_id: str
    remaining: int  # as the ledger warned (spending since may have taken some)
    expires_at: datetime


class LotView(BaseModel):
    lot_id: str
    amount: int
    remaining: int
    expires_at: datetime | None  # null: never
    description: str | None
    value_cents: int = Field(0, description="what the lot's credits were sold for, all of them (0: given)")
    currency: str | None = None

    @computed_field(description="value_cents / amount, in minor units to four places")  # type: ignore[prop-decorator]
    @property
    def price_per_credit(self) -> str:
        return finance.price_per_credit(self.value_cents, self.amount)


class Totals(BaseModel):
    credits_bought: int
    credits_spent: int
    money_spent_cents: int


class Dashboard(BaseModel):
    """The dashboard's data in one answer (the seed's getDashboardData)."""

    user: Profile
    account: Account
    counts: Counts
    totals: Totals
    recent_activity: list[Activity]
    credit_history: list[CreditEntry]
    usage: list[UsageDay]
    lots: list[LotView] = Field(description="credit left by lot, in spending order (soonest expiry first)")
    expiring_soon: list[Expiring]
    subscription: SubscriptionView | None
    spending: Spending


class Spending(BaseModel):
    """This calendar month (UTC) against the account's cap."""

    month: str  # YYYY-MM
    used_this_month: int
    monthly_cap: int | None  # null: no cap


class ExportedLot(BaseModel):
    lot_id: str
    amount: int | None  # null: the grant that made it is not read yet
    remaining: int | None
    expired: bool
    expires_at: datetime | None
    description: str | None
    granted_at: datetime | None


class JobLinks(BaseModel):
    """Paths on the media service (with the same token): the record, and its file once made."""

    record: str
    file: str


class ExportedJob(BaseModel):
    job_id: str
    operation: str
    status: str
    cost: int | None
    resource_type: str | None
    resource_id: str | None
    requested_at: datetime | None
    ended_at: datetime | None
    links: JobLinks | None


class Export(BaseModel):
    """Everything creditstream holds of the token's user (GDPR Art. 15 and 20), in one document."""

    format: str = Field(description="creditstream-export/1")
    exported_at: datetime
    user: Profile | None
    account: Account
    subscriptions: list[SubscriptionView]
    transactions: list[Transaction]
    lots: list[ExportedLot]
    media_jobs: list[ExportedJob]
    activity: list[Activity]
    credit_history: list[CreditEntry] = Field(description="every entry, newest first")


class OrgView(BaseModel):
    id: str  # Clerk's
    name: str
    slug: str | None
    account_id: str
    role: str  # the caller's: org:admin | org:member


class OrgCreditsResponse(BaseModel):
    org: OrgView
    balance: int
    reserved: int  # held for running jobs
    available: int
    history: list[CreditEntry]  # every member's for an admin; a member's own for them
    next_cursor: str | None


class MemberUsage(BaseModel):
    user_id: str
    clerk_id: str | None  # what an admin names them by to set their limit (null: not signed in here yet)
    name: str | None
    email: str | None
    role: str | None  # org:admin | org:member; null: no longer a member (they spent before they left)
    active: bool
    monthly_limit: int | None  # null: no limit
    used: int  # spent of the organization's credit this month (UTC)


class OrgTotals(BaseModel):
    used_this_month: int  # by the members shown
    credits_bought: int
    credits_spent: int


class OrgDashboard(BaseModel):
    org: OrgView
    month: str  # YYYY-MM, UTC: what `used` counts
    account: Account
    members: list[MemberUsage]  # all for an admin; the caller alone for a member
    totals: OrgTotals
    lots: list[LotView]
