"""Identity's HTTP API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as public_dataclass

from services.identity.application import Identity, SyncUser
from services.identity.devtokens import DevSigner
from services.identity.domain import (
    MembershipInfo,
    OrganizationNotFoundError,
    OrgInfo,
    Profile,
    User,
    UserDeactivatedError,
)
from shared.auth import Principal, SignedInUser, user_id_for
from shared.contracts.identity import OrgRole
from shared.guard import GuardedRoute
from shared.inputs import Email, LongText, ShortText
from shared.params import CorrelationId
from shared.problems import Problem, responses

router = APIRouter(route_class=GuardedRoute)
dev_router = APIRouter(tags=["dev"], route_class=GuardedRoute)


async def get_identity(request: Request) -> Identity:
    return request.app.state.identity


async def get_signer(request: Request) -> DevSigner:
    return request.app.state.signer


# The stored user as the API shows it, every field of it (a comment: a docstring would become its schema's).
@public_dataclass(frozen=True)
class UserPublic(User):
    @classmethod
    def of(cls, user: User) -> UserPublic:
        return cls(**vars(user))


class SyncResponse(BaseModel):
    user: UserPublic
    created: bool


class SyncRequest(BaseModel):
    """Profile fields the token may not carry (Clerk session tokens hold only what you configure)."""

    model_config = ConfigDict(extra="forbid")

    email: Email | None = None
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    avatar: LongText | None = None


# A claim is used only if it is what the body would have to be: custom session claims are whatever
# Clerk is told to put there, so one that is not acceptable is ignored, never stored.
CLAIM_RULES: dict[str, TypeAdapter[str]] = {
    "email": TypeAdapter(Email),
    "first_name": TypeAdapter(ShortText),
    "last_name": TypeAdapter(ShortText),
    "image_url": TypeAdapter(LongText),
    "avatar": TypeAdapter(LongText),
}


@router.post("/api/user/sync", response_model=SyncResponse, tags=["user"])
async def sync_user(
    principal: SignedInUser,
    identity: Annotated[Identity, Depends(get_identity)],
    correlation_id: CorrelationId = None,
    body: Annotated[SyncRequest | None, Body()] = None,
) -> SyncResponse:
    """createOrGetUser for the token's user: the token's claims win over the body's."""
    claims = principal.claims
    extra = body or SyncRequest()
    email = _claim(claims, "email") or extra.email
    if not email:
        raise Problem(422, "No usable email in the token claims or the request body.")
    profile = Profile(
        clerk_id=principal.clerk_id,
        email=str(email),
        first_name=_claim(claims, "first_name") or extra.first_name,
        last_name=_claim(claims, "last_name") or extra.last_name,
        avatar=_claim(claims, "image_url", "avatar") or extra.avatar,
        role="admin" if principal.role == "admin" else "user",
    )
    org, membership = _membership_of(principal)
    try:
        result = await identity.execute(SyncUser(profile, correlation_id, org, membership))
    except UserDeactivatedError as exc:
        raise Problem(403, "This account is deactivated.") from exc
    return SyncResponse(user=UserPublic.of(result.user), created=result.created)


def _membership_of(principal: Principal) -> tuple[OrgInfo | None, MembershipInfo | None]:
    """What an org-scoped token says: the caller belonged to that organization, in that role, when it was
    issued (its iat); a token knows no organization's name, so its slug (or id) stands in until Clerk's word."""
    org = principal.org
    if org is None:
        return None, None
    iat = principal.claims.get("iat")
    issued_ms = int(iat * 1000) if isinstance(iat, int | float) and not isinstance(iat, bool) else 0
    return (
        OrgInfo(org.id, org.slug or org.id, org.slug),
        MembershipInfo(org.id, principal.clerk_id, org.role, issued_ms),
    )


class OrganizationPublic(BaseModel):
    id: str
    name: str
    slug: str | None
    account_id: str
    role: OrgRole  # the caller's
    members: int | None  # for the organization's admins


@router.get("/api/org", response_model=OrganizationPublic, tags=["organizations"], responses=responses(404))
async def get_org(principal: SignedInUser, identity: Annotated[Identity, Depends(get_identity)]) -> OrganizationPublic:
    """The organization the token is active in, and the caller's role in it (their own, as identity knows it:
    a token issued before a removal no longer counts)."""
    active = principal.org
    if active is None:
        raise Problem(404, "The token has no active organization: switch to one in Clerk first.")
    try:
        org, member = await identity.organization(active.id, principal.user_id)
    except OrganizationNotFoundError as exc:
        detail = f"Organization {active.id} is not known here (sign in with it first) or was deleted."
        raise Problem(404, detail) from exc
    if member is None or not member.active:
        raise Problem(403, f"You are not a member of organization {active.id}.")
    count = len(await identity.members(org.id)) if member.role == "org:admin" else None
    return OrganizationPublic(
        id=org.id, name=org.name, slug=org.slug, account_id=org.account_id, role=member.role, members=count
    )


class MembershipPublic(BaseModel):
    id: str  # the organization's (Clerk's)
    name: str
    slug: str | None
    account_id: str
    role: OrgRole


@router.get("/api/user/organizations", response_model=list[MembershipPublic], tags=["organizations"])
async def my_organizations(
    principal: SignedInUser, identity: Annotated[Identity, Depends(get_identity)]
) -> list[MembershipPublic]:
    """The organizations the caller belongs to, by name: what an organization switcher offers (Clerk makes the
    token active in the one chosen)."""
    return [
        MembershipPublic(id=org.id, name=org.name, slug=org.slug, account_id=org.account_id, role=member.role)
        for org, member in await identity.organizations_of(principal.user_id)
    ]


def _claim(claims: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value:
            try:
                return CLAIM_RULES[name].validate_python(value)
            except ValidationError:
                continue
    return None


class DevTokenRequest(BaseModel):
    clerk_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_\-]+$")
    email: Email
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    role: Literal["user", "admin"] = "user"
    # An active organization, as a Clerk session token of someone who switched to it carries it.
    org_id: str | None = Field(default=None, pattern=r"^org_[A-Za-z0-9]{1,100}$")
    org_role: Literal["org:admin", "org:member"] = "org:member"
    org_slug: ShortText | None = None


class DevTokenResponse(BaseModel):
    token: str
    user_id: str


@dev_router.post("/dev/token", response_model=DevTokenResponse)
async def dev_token(body: DevTokenRequest, signer: Annotated[DevSigner, Depends(get_signer)]) -> DevTokenResponse:
    claims: dict[str, Any] = {
        "sub": body.clerk_id,
        "email": str(body.email),
        "first_name": body.first_name,
        "last_name": body.last_name,
    }
    if body.role != "user":
        claims["public_metadata"] = {"role": body.role}  # where Clerk's session token carries it
    if body.org_id is not None:
        claims.update(org_id=body.org_id, org_role=body.org_role, org_slug=body.org_slug)
    return DevTokenResponse(token=signer.sign(claims), user_id=user_id_for(body.clerk_id))


@dev_router.get("/.well-known/jwks.json")
async def jwks(signer: Annotated[DevSigner, Depends(get_signer)]) -> dict[str, Any]:
    return signer.jwks()
