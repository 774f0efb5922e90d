"""Bearer-token verification shared by all five services.

User tokens are RS256 JWTs checked against a JWKS: Clerk's in production, identity's dev key under
AUTH_MODE=dev. Service tokens are RS256 JWTs signed with the service key (shared/service_tokens.py),
recognised by its kid and checked against its public half alone; each is for one service (`aud`) and
holds scopes there (shared/scopes.py), which privileged endpoints ask for (`privileged`). The user id
every service uses is derived from the token's `sub` (the Clerk id), so a service can act for a user
without asking identity first. A user deactivated by identity is refused by every service
(shared/access.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

import jwt
from fastapi import Depends, Request, params
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.contracts import derive_id
from shared.contracts.identity import OrgRole, org_account_id_for
from shared.inputs import InputError, check_text
from shared.problems import Problem
from shared.scopes import Scope, of_audience
from shared.service_tokens import SERVICE_ISSUER, SERVICE_SUBJECT_PREFIX, ServiceKey

Role = Literal["user", "admin", "service"]
LEEWAY_SECONDS = 5
VERIFIED_CACHE_LIMIT = 50_000
MAX_SUBJECT_LENGTH = 200
ALGORITHM = "RS256"


def user_id_for(clerk_id: str) -> str:
    return str(derive_id("user", clerk_id))


ORG_ID = re.compile(r"org_[A-Za-z0-9]{1,100}")


@dataclass(frozen=True)
class Organization:
    """The token's active Clerk organization and the caller's role in it."""

    id: str
    role: OrgRole
    slug: str | None

    @property
    def account_id(self) -> str:
        return org_account_id_for(self.id)

    @property
    def is_admin(self) -> bool:
        return self.role == "org:admin"


def organization_of(claims: dict[str, Any]) -> Organization | None:
    """From a session token's `org_id` / `org_role` / `org_slug` (Clerk's v1 claims) or its `o` claim (v2:
    `id`, `rol` without the `org:` prefix, `slg`); None without an active organization. A role other than
    admin (a custom one) is a member's: it may spend, not manage."""
    v2 = claims.get("o")
    org_id, role, slug = (
        (v2.get("id"), v2.get("rol"), v2.get("slg")) if isinstance(v2, dict)
        else (claims.get("org_id"), claims.get("org_role"), claims.get("org_slug"))
    )  # fmt: skip
    if org_id is None:
        return None
    if not isinstance(org_id, str) or not ORG_ID.fullmatch(org_id):
        raise AuthError("the token's organization id is not a Clerk organization id")
    if slug is not None and (not isinstance(slug, str) or len(slug) > 200):
        raise AuthError("the token's organization slug is not a short text")
    return Organization(org_id, org_role_of(role), slug)


def org_role_of(role: object) -> OrgRole:
    """Clerk's role key (`org:admin`, a v2 token's `admin`, a custom `org:billing`) as ours: only an admin
    manages; any other role is a member's, who may spend."""
    return "org:admin" if isinstance(role, str) and role.removeprefix("org:") == "admin" else "org:member"


@dataclass(frozen=True)
class Principal:
    clerk_id: str
    user_id: str
    role: Role
    claims: dict[str, Any] = field(default_factory=dict, repr=False)
    scopes: frozenset[Scope] = frozenset()  # a service token's, at the service that verified it
    org: Organization | None = None  # a user token's active organization

    def holds(self, scope: Scope) -> bool:
        """An admin holds every scope; a service token the ones it names; a user none."""
        return self.role == "admin" or (self.role == "service" and scope in self.scopes)


class AuthError(Exception):
    """The token is not acceptable: 401."""


class KeySetUnavailableError(Exception):
    """The JWKS could not be fetched: we cannot tell good tokens from bad ones, so 503, not 401."""


class TokenVerifier:
    def __init__(
        self,
        jwks_url: str,
        *,
        audience: str,
        issuer: str | None,
        authorized_parties: Iterable[str],
        admin_clerk_ids: Iterable[str] = (),
        service_key: ServiceKey | None = None,
        refresh_cooldown: float = 10.0,
    ) -> None:
        # The key set is cached for 5 minutes and refetched once on an unknown kid, at most once per
        # cooldown, so a flood of made-up kids cannot turn into a flood of JWKS requests.
        self._jwks = jwt.PyJWKClient(
            jwks_url, cache_jwk_set=True, lifespan=300, timeout=5, cooldown_duration=refresh_cooldown
        )
        self._issuer = issuer
        self._parties = frozenset(authorized_parties)
        self._admins = frozenset(admin_clerk_ids)
        self._service_key = service_key
        # Service tokens must be addressed to this service and may hold only its scopes: a token made
        # for the ledger is worth nothing at payments.
        self._audience = audience
        self._scopes = {scope.value: scope for scope in of_audience(audience)}
        # A token is verified once and trusted until it expires: a frontend sends the same token with
        # every request, and the RS256 check (on a thread) cost more than the rest of a debit. A key
        # removed from the JWKS stops new tokens at once; the ones it signed live out their minutes.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified before and not expired since, else None."""
        hit = self._verified.get(token)
        if hit is None:
            return None
        if time.time() >= hit[1]:
            self._verified.pop(token, None)
            return None
        return hit[0]

    def remember(self, token: str, principal: Principal) -> None:
        expires = principal.claims.get("exp")
        if isinstance(expires, int | float):
            if len(self._verified) >= VERIFIED_CACHE_LIMIT:
                self._verified.clear()  # bounded: a cold cache costs one verification per token
            self._verified[token] = (principal, float(expires))

    def verify(self, token: str) -> Principal:
        """Blocking (it may fetch the JWKS): call it from a thread."""
        kid = _checked_kid(token)
        if self._service_key is not None and kid == self._service_key.kid:
            return self._verify_service(token, self._service_key)
        try:
            key = self._jwks.get_signing_key(kid).key
        except jwt.PyJWKClientConnectionError as exc:
            raise KeySetUnavailableError(str(exc)) from exc
        except jwt.PyJWKClientError as exc:
            raise AuthError(f"unknown signing key {kid!r}") from exc
        claims = _decode(token, key, issuer=self._issuer)
        if self._parties and claims.get("azp") not in self._parties:
            raise AuthError(f"authorized party {claims.get('azp')!r} is not allowed")
        sub = _subject(claims)
        if sub.startswith(SERVICE_SUBJECT_PREFIX):
            raise AuthError("user tokens may not name a service subject")
        return Principal(clerk_id=sub, user_id=user_id_for(sub), role=self._user_role(sub, claims), claims=claims,
                         org=organization_of(claims))  # fmt: skip

    def _verify_service(self, token: str, key: ServiceKey) -> Principal:
        claims = _decode(token, key.public, issuer=SERVICE_ISSUER, audience=self._audience)
        sub = _subject(claims)
        if not sub.startswith(SERVICE_SUBJECT_PREFIX):
            raise AuthError("service tokens must name a service subject")
        scopes = claims.get("scope")
        if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
            raise AuthError("a service token must carry its scopes as a list of strings")
        if unknown := [scope for scope in scopes if scope not in self._scopes]:
            raise AuthError(f"scopes {unknown!r} are not {self._audience}'s")
        held = frozenset(self._scopes[scope] for scope in scopes)
        return Principal(clerk_id=sub, user_id=user_id_for(sub), role="service", claims=claims, scopes=held)

    def _user_role(self, sub: str, claims: dict[str, Any]) -> Role:
        """Admin from ADMIN_CLERK_IDS or `public_metadata.role`; never `service`, whatever a user token says.

        Clerk lets only the backend write a user's public metadata; unsafe metadata (and so any claim made
        from it, a `metadata` or a top-level `role`) the user can write themselves."""
        if sub in self._admins:
            return "admin"
        public = claims.get("public_metadata")
        return "admin" if isinstance(public, dict) and public.get("role") == "admin" else "user"


def _checked_kid(token: str) -> str:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise AuthError(f"malformed token: {exc}") from exc
    # Refused before any key is looked up: `none` and HS256-with-the-public-key never get that far.
    if header.get("alg") != ALGORITHM:
        raise AuthError(f"algorithm {header.get('alg')!r} is not allowed; only {ALGORITHM}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthError("the token names no signing key (kid)")
    return kid


def _decode(token: str, key: Any, *, issuer: str | None, audience: str | None = None) -> dict[str, Any]:
    """The verified claims; `aud` is checked only when an audience is given (service tokens), and then
    strictly: one string, equal to it (a list naming several services is refused)."""
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=issuer,
            audience=audience,
            leeway=LEEWAY_SECONDS,
            options={
                "require": ["exp", "sub", *(["aud"] if audience else [])],
                "verify_aud": audience is not None,
                "strict_aud": True,
            },
        )
    except jwt.PyJWTError as exc:
        raise AuthError(str(exc)) from exc


def _subject(claims: dict[str, Any]) -> str:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_SUBJECT_LENGTH:
        raise AuthError("the token has no usable subject")
    try:
        return check_text(sub)
    except InputError as exc:
        raise AuthError(f"the token's subject {exc}") from exc


class OrgStanding(Protocol):
    excluded: bool
    role: str | None


class AccessCheck(Protocol):
    async def is_deactivated(self, user_id: str) -> bool: ...
    async def standing(self, org_id: str, user_id: str) -> OrgStanding: ...


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": "Bearer"})


# Declares the scheme in OpenAPI (the Authorize button of /docs); the check itself is ours.
bearer_scheme = HTTPBearer(auto_error=False, description="A Clerk session token, or a service token.")


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def current_principal(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Principal:
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise _unauthorized("A bearer token is required.")
    verifier: TokenVerifier = request.app.state.verifier
    principal = verifier.cached(token) or await _verified(verifier, token)
    if principal.role != "service":
        access: AccessCheck | None = getattr(request.app.state, "access", None)
        if access is None:
            raise Problem(503, "The service is starting.")
        if await access.is_deactivated(principal.user_id):
            raise Problem(403, "This account is deactivated.")
        if principal.org is not None:
            principal = await _in_organization(access, principal, principal.org)
    return principal


async def _in_organization(access: AccessCheck, principal: Principal, org: Organization) -> Principal:
    """The token's word on its organization, overruled by what identity announced since it was issued."""
    standing = await access.standing(org.id, principal.user_id)
    if standing.excluded:
        raise Problem(403, f"You are no longer a member of organization {org.id}.", org_id=org.id)
    if standing.role is not None and standing.role != org.role:
        return dataclasses.replace(principal, org=dataclasses.replace(org, role=org_role_of(standing.role)))
    return principal


async def _verified(verifier: TokenVerifier, token: str) -> Principal:
    try:
        principal = await asyncio.to_thread(verifier.verify, token)
    except KeySetUnavailableError as exc:
        raise Problem(503, "The token signing keys cannot be fetched now.") from exc
    except AuthError as exc:
        raise _unauthorized(f"Invalid token: {exc}") from exc
    verifier.remember(token, principal)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def ensure_holds(principal: Principal, scope: Scope) -> None:
    if not principal.holds(scope):
        raise Problem(
            403, f"This needs an admin, or a service token holding the scope {scope.value!r}.", scope=scope.value
        )


def privileged(scope: Scope) -> params.Depends:
    """The dependency of an endpoint for admins and for service tokens holding `scope`:
    `principal: Annotated[Principal, privileged(Scope.LEDGER_ADJUST)]`."""

    async def require(principal: CurrentPrincipal) -> Principal:
        ensure_holds(principal, scope)
        return principal

    return Depends(require)


async def require_user(principal: CurrentPrincipal) -> Principal:
    """For endpoints that act as a signed-in person (a service token has no user behind it)."""
    if principal.role == "service":
        raise Problem(403, "This endpoint is for signed-in users.")
    return principal


SignedInUser = Annotated[Principal, Depends(require_user)]


def ensure_may_act_for(principal: Principal, user_id: str, scope: Scope) -> None:
    """A user acts on their own account; on another's only an admin, or a service token holding `scope`."""
    if principal.user_id == user_id:
        return
    if principal.role == "user":
        raise Problem(403, "You may only act on your own account.")
    ensure_holds(principal, scope)


def member_acting_for(principal: Principal, account_id: str, scope: Scope) -> str | None:
    """Who spends when `principal` acts on `account_id`: on their active organization's account, they as its
    member (their user id: their monthly limit applies); on their own, an admin or a service, nobody's limit
    (None). Anyone else is refused as `ensure_may_act_for` refuses them."""
    org = principal.org
    if org is not None and principal.role != "service" and org.account_id == account_id:
        return principal.user_id
    ensure_may_act_for(principal, account_id, scope)
    return None


def ensure_org_admin(principal: Principal) -> Organization:
    """The organization the caller administers: the token's active one, with the org:admin role there."""
    org = principal.org
    if org is None:
        raise Problem(403, "This needs a token active in an organization (switch to it in Clerk).")
    if not org.is_admin:
        raise Problem(403, f"Only an admin of organization {org.id} may do this.", org_id=org.id)
    return org
