"""Clerk webhook payloads → identity commands. Parsing only: the signature is checked before this runs.

A payload is held to the same rules as a sign-in (shared/inputs.py): what one door refuses, the other
does not store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, StringConstraints, TypeAdapter, ValidationError

from services.identity.domain import ROLES, MembershipInfo, OrgInfo, Profile
from shared.auth import ORG_ID, org_role_of
from shared.inputs import Email, LongText, ShortText
from shared.webhooks import PayloadError

HANDLED = ("user.created", "user.updated", "user.deleted")
ORGANIZATION_EVENTS = ("organization.created", "organization.updated", "organization.deleted")
MEMBERSHIP_EVENTS = tuple(f"organizationMembership.{change}" for change in ("created", "updated", "deleted"))
EMAIL: TypeAdapter[str] = TypeAdapter(Email)


class ClerkPayloadError(PayloadError):
    pass


@dataclass(frozen=True)
class ClerkEvent:
    type: str
    clerk_id: str | None = None
    profile: Profile | None = None  # for user.created / user.updated
    org: OrgInfo | None = None  # for organization.* (a deleted one: its id only) and organizationMembership.*
    membership: MembershipInfo | None = None  # for organizationMembership.*


class _Address(BaseModel):
    id: str | None = None
    email_address: str | None = None


class _User(BaseModel):
    """The part of Clerk's user object we keep; unknown fields are Clerk's business."""

    id: Annotated[ShortText, StringConstraints(min_length=1)]
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    image_url: LongText | None = None
    email_addresses: list[_Address] = []
    primary_email_address_id: str | None = None
    public_metadata: dict[str, Any] | None = None


M = TypeVar("M", bound=BaseModel)
OrgId = Annotated[str, StringConstraints(pattern=ORG_ID.pattern)]
Millis = Annotated[int, Field(ge=0, le=2**62)]


class _Organization(BaseModel):
    id: OrgId
    name: ShortText | None = None  # absent from organization.deleted
    slug: ShortText | None = None
    updated_at: Millis = 0


class _PublicUserData(BaseModel):
    user_id: Annotated[ShortText, StringConstraints(min_length=1)]


class _Membership(BaseModel):
    id: Annotated[ShortText, StringConstraints(min_length=1)]
    role: ShortText
    organization: _Organization
    public_user_data: _PublicUserData
    updated_at: Millis = 0


def _validated(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ClerkPayloadError(f"data.{'.'.join(map(str, error['loc']))}: {error['msg']}") from None


def _org_info(org: _Organization) -> OrgInfo:
    # Clerk requires a name; a payload without one (a deleted organization's) names it by its slug or id.
    return OrgInfo(org.id, org.name or org.slug or org.id, org.slug, org.updated_at)


def parse_event(payload: Any) -> ClerkEvent:
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise ClerkPayloadError("a Clerk event is an object with a type")
    kind = payload["type"]
    if kind not in (*HANDLED, *ORGANIZATION_EVENTS, *MEMBERSHIP_EVENTS):
        return ClerkEvent(type=kind[:100])
    data = payload.get("data")
    if not isinstance(data, dict) or not data.get("id"):
        what = "user" if kind in HANDLED else kind.partition(".")[0]
        raise ClerkPayloadError(f"{kind} carries no {what} id")
    if kind in ORGANIZATION_EVENTS:
        return ClerkEvent(type=kind, org=_org_info(_validated(_Organization, data)))
    if kind in MEMBERSHIP_EVENTS:
        member = _validated(_Membership, data)
        info = MembershipInfo(
            org_id=member.organization.id, clerk_user_id=member.public_user_data.user_id,
            role=org_role_of(member.role), at=member.updated_at, membership_id=member.id,
        )  # fmt: skip
        return ClerkEvent(type=kind, org=_org_info(member.organization), membership=info)
    user = _validated(_User, data)
    if kind == "user.deleted":
        return ClerkEvent(type=kind, clerk_id=user.id)
    return ClerkEvent(type=kind, clerk_id=user.id, profile=_profile(user))


def _profile(user: _User) -> Profile:
    role = (user.public_metadata or {}).get("role")
    return Profile(
        clerk_id=user.id,
        email=_primary_email(user),
        first_name=user.first_name or None,
        last_name=user.last_name or None,
        avatar=user.image_url or None,
        role=role if role in ROLES else "user",
    )


def _primary_email(user: _User) -> str:
    addresses = [a.email_address for a in user.email_addresses if a.id == user.primary_email_address_id]
    # No primary marked: the first address is what Clerk shows the user first.
    address = next(iter(addresses), None) or next((a.email_address for a in user.email_addresses), None)
    if not address:
        raise ClerkPayloadError("the user has no email address")
    try:
        return EMAIL.validate_python(address)
    except ValidationError:
        raise ClerkPayloadError(f"the user's email address {address[:100]!r} is not valid") from None
