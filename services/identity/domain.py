"""Users as identity knows them; no framework, no SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.contracts.identity import (
    MemberAdded,
    MemberRemoved,
    MemberRoleChanged,
    OrganizationCreated,
    OrganizationDeleted,
    OrganizationUpdated,
    OrgRole,
    UserDeactivated,
    UserErased,
    UserReactivated,
    UserRegistered,
    UserUpdated,
    org_account_id_for,
)

ROLES = ("user", "admin")


@dataclass(frozen=True)
class Profile:
    """What a sign-in (token claims) or a Clerk webhook tells us about a user."""

    clerk_id: str
    email: str
    first_name: str | None = None
    last_name: str | None = None
    avatar: str | None = None
    role: str = "user"


@dataclass(frozen=True)
class User:
    """The stored user. `role` records what Clerk said last; authorisation reads the token, not this."""

    id: str
    clerk_id: str
    email: str
    first_name: str | None
    last_name: str | None
    avatar: str | None
    is_active: bool
    role: str
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None = None  # forgotten: no profile any more, never active again

    def registered(self) -> UserRegistered:
        return UserRegistered(**self._profile())

    def updated(self) -> UserUpdated:
        return UserUpdated(**self._profile())

    def _profile(self) -> dict[str, str | None]:
        """What a registration and an update announce of the user."""
        return {
            "user_id": self.id, "clerk_id": self.clerk_id, "email": self.email, "first_name": self.first_name,
            "last_name": self.last_name, "avatar": self.avatar,
        }  # fmt: skip

    def deactivated(self, reason: str | None, by: str | None) -> UserDeactivated:
        return UserDeactivated(user_id=self.id, reason=reason, by=by)

    def reactivated(self, by: str | None) -> UserReactivated:
        return UserReactivated(user_id=self.id, by=by)

    def erased(self, by: str | None) -> UserErased:
        return UserErased(user_id=self.id, by=by)


@dataclass(frozen=True)
class OrgInfo:
    """What a Clerk organization webhook (or, with less, a token) says of an organization. `at`: Clerk's
    updated_at in ms (0 from a token: anything Clerk says later wins)."""

    org_id: str
    name: str
    slug: str | None
    at: int = 0


@dataclass(frozen=True)
class Organization:
    id: str  # Clerk's
    name: str
    slug: str | None
    changed_at: int  # Clerk's updated_at (ms) of what is stored
    deleted_at: datetime | None
    created_at: datetime

    @property
    def account_id(self) -> str:
        return org_account_id_for(self.id)

    def created(self) -> OrganizationCreated:
        return OrganizationCreated(org_id=self.id, account_id=self.account_id, name=self.name, slug=self.slug)

    def updated(self) -> OrganizationUpdated:
        return OrganizationUpdated(org_id=self.id, account_id=self.account_id, name=self.name, slug=self.slug)

    def deleted(self) -> OrganizationDeleted:
        return OrganizationDeleted(org_id=self.id, account_id=self.account_id)


@dataclass(frozen=True)
class MembershipInfo:
    """What says a user belongs to an organization: a Clerk membership webhook (with the membership's id
    and Clerk's updated_at in ms), or an org-scoped token (no id; `at` its iat in ms)."""

    org_id: str
    clerk_user_id: str
    role: OrgRole
    at: int
    membership_id: str | None = None


@dataclass(frozen=True)
class Membership:
    org_id: str
    user_id: str
    clerk_user_id: str
    role: OrgRole
    membership_id: str | None  # Clerk's (orgmem_...), once a webhook named it
    changed_at: int  # ms: the newest word applied (Clerk's updated_at, a token's iat, our time of a removal)
    removed_at: datetime | None

    @property
    def active(self) -> bool:
        return self.removed_at is None

    @property
    def account_id(self) -> str:
        return org_account_id_for(self.org_id)

    def added(self) -> MemberAdded:
        return MemberAdded(org_id=self.org_id, account_id=self.account_id, user_id=self.user_id, role=self.role)

    def role_changed(self) -> MemberRoleChanged:
        return MemberRoleChanged(org_id=self.org_id, account_id=self.account_id, user_id=self.user_id, role=self.role)

    def removed(self) -> MemberRemoved:
        return MemberRemoved(org_id=self.org_id, account_id=self.account_id, user_id=self.user_id)


@dataclass(frozen=True)
class MembershipChange:
    """What a word about a membership does to the stored one: the row to write and the event it is (None:
    the row changes without news, as when a webhook names a membership a token told us of)."""

    role: OrgRole
    removed: bool
    at: int
    event: str | None  # "added" | "role" | "removed"


def membership_change(
    current: Membership | None, info: MembershipInfo, *, remove: bool, now_ms: int
) -> MembershipChange | None:
    """How a webhook or a token changes a membership, whatever order they come in; None: not at all.

    A removal wins over all that came before it (stamped with our time, later than Clerk issued any token that
    still names the organization); it is stale only when it names a membership other than the stored one (the
    user left and was added again). After a removal, a membership comes back only as a new Clerk membership
    (another id) or by a token issued after the removal. Otherwise the newest word (Clerk's updated_at, a
    token's iat) sets the role."""
    if remove:
        stale = (
            current is not None
            and info.membership_id not in (None, current.membership_id)
            and (current.membership_id is not None)
        )
        if stale or (current is not None and not current.active):
            return None
        role = current.role if current is not None else info.role
        at = max(now_ms, current.changed_at + 1 if current is not None else 0)
        return MembershipChange(role, True, at, "removed" if current is not None else None)
    if current is None:
        return MembershipChange(info.role, False, info.at, "added")
    if not current.active:
        if info.membership_id is not None and info.membership_id == current.membership_id:
            return None  # the removed membership's own late word
        if info.membership_id is not None or info.at > current.changed_at:
            return MembershipChange(info.role, False, max(info.at, current.changed_at + 1), "added")
        return None
    if info.at > current.changed_at:
        return MembershipChange(info.role, False, info.at, "role" if info.role != current.role else None)
    if info.membership_id is not None and current.membership_id is None:
        return MembershipChange(current.role, False, current.changed_at, None)
    return None


class OrganizationNotFoundError(LookupError):
    pass


class UserErasedError(Exception):
    """A forgotten user cannot be active again."""


class UserNotFoundError(LookupError):
    pass


class UserDeactivatedError(PermissionError):
    pass


class SelfDeactivationError(ValueError):
    """An admin may not lock themselves out."""
