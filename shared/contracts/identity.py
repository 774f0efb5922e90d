"""Events published by the identity service on the IDENTITY stream."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.contracts.envelope import EventData, derive_id
from shared.inputs import LongText, MediumText, ShortText

# Who did it, for the audit trail: the admin's (or service's) user id; None when Clerk or identity itself did.
BY = "the admin's or service's user id that asked for it; null when Clerk's webhook or identity did"


class _Profile(EventData):
    user_id: ShortText
    clerk_id: ShortText
    email: MediumText
    first_name: ShortText | None
    last_name: ShortText | None
    avatar: LongText | None


class UserRegistered(_Profile):
    type = "identity.user.registered"


class UserUpdated(_Profile):
    type = "identity.user.updated"


class UserDeactivated(EventData):
    type = "identity.user.deactivated"
    user_id: ShortText
    reason: MediumText | None = None
    by: ShortText | None = Field(default=None, description=BY)


class UserReactivated(EventData):
    type = "identity.user.reactivated"
    user_id: ShortText
    by: ShortText | None = Field(default=None, description=BY)


class UserErased(EventData):
    """Forget the person (GDPR Art. 17): every service drops what it holds of them but the financial
    record, which stays under the pseudonymous user id. Identity has deactivated them first."""

    type = "identity.user.erased"
    user_id: ShortText
    by: ShortText | None = Field(default=None, description=BY)


# -- organizations (Clerk's), each with a credit account of its own --------------------------------

OrgRole = Literal["org:admin", "org:member"]  # any other Clerk role is a member's


def org_account_id_for(org_id: str) -> str:
    """The ledger account of a Clerk organization: derived, so every service finds it without asking."""
    return str(derive_id("org", org_id))


class _Organization(EventData):
    org_id: ShortText  # Clerk's (org_...)
    account_id: ShortText  # its ledger account (shared.auth.org_account_id_for)


class _NamedOrganization(_Organization):
    name: ShortText
    slug: ShortText | None


class OrganizationCreated(_NamedOrganization):
    type = "identity.org.created"


class OrganizationUpdated(_NamedOrganization):
    type = "identity.org.updated"


class OrganizationDeleted(_Organization):
    """The organization is gone: its account is deactivated, none of its members may act for it."""

    type = "identity.org.deleted"


class _Membership(_Organization):
    user_id: ShortText


class MemberAdded(_Membership):
    type = "identity.org.member.added"
    role: OrgRole


class MemberRoleChanged(_Membership):
    type = "identity.org.member.updated"
    role: OrgRole


class MemberRemoved(_Membership):
    """The user may no longer spend from, or read, the organization's account."""

    type = "identity.org.member.removed"
