"""Bearer-token verification shared by all five services.

Tokens are RS256 JWTs checked against a JWKS: Clerk's in production, identity's dev key under
AUTH_MODE=dev. The user id every service uses is derived from the token's `sub` (the Clerk id), so a
service can act for a user without asking identity first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import jwt
from fastapi import Depends, Request

from shared.contracts import derive_id
from shared.problems import Problem

Role = Literal["user", "admin", "service"]
LEEWAY_SECONDS = 5


def user_id_for(clerk_id: str) -> str:
    return str(derive_id("user", clerk_id))


@dataclass(frozen=True)
class Principal:
    clerk_id: str
    user_id: str
    role: Role
    claims: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_privileged(self) -> bool:
        return self.role in ("admin", "service")


class AuthError(Exception):
    pass


class TokenVerifier:
    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str | None,
        authorized_parties: list[str],
        admin_clerk_ids: list[str] = (),  # type: ignore[assignment]
    ) -> None:
        # PyJWKClient caches the key set and refetches once when it meets an unknown kid.
        self._jwks = jwt.PyJWKClient(jwks_url, cache_jwk_set=True, lifespan=300, timeout=5)
        self._issuer = issuer
        self._parties = set(authorized_parties)
        self._admins = set(admin_clerk_ids)

    def verify(self, token: str) -> Principal:
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"], "verify_aud": False},
            )
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise AuthError(str(exc)) from exc
        role = self._role(claims)
        azp = claims.get("azp")
        if role != "service" and self._parties and azp not in self._parties:
            raise AuthError(f"authorized party {azp!r} is not allowed")
        sub = str(claims["sub"])
        return Principal(clerk_id=sub, user_id=user_id_for(sub), role=role, claims=claims)

    def _role(self, claims: dict[str, Any]) -> Role:
        metadata = claims.get("metadata") or claims.get("public_metadata") or {}
        role = claims.get("role") or (metadata.get("role") if isinstance(metadata, dict) else None)
        if claims.get("sub") in self._admins:
            return "admin"
        return role if role in ("admin", "service") else "user"


def current_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(401, "Unauthorized", "A bearer token is required.", headers={"WWW-Authenticate": "Bearer"})
    verifier: TokenVerifier = request.app.state.verifier
    try:
        return verifier.verify(token.strip())
    except AuthError as exc:
        raise Problem(401, "Unauthorized", f"Invalid token: {exc}", headers={"WWW-Authenticate": "Bearer"}) from exc


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_privileged(principal: CurrentPrincipal) -> Principal:
    if not principal.is_privileged:
        raise Problem(403, "Forbidden", "This endpoint is for admins and services only.")
    return principal


Privileged = Annotated[Principal, Depends(require_privileged)]


def ensure_may_act_for(principal: Principal, user_id: str) -> None:
    if principal.user_id != user_id and not principal.is_privileged:
        raise Problem(403, "Forbidden", "You may only act on your own account.")
