"""Service tokens: short-lived RS256 JWTs for the operator CLI (and tests) to call a service's
privileged endpoints.

They are signed with a key of their own, never Clerk's, so no end user can hold one. Each names one
audience (the service it is for) and the scopes it holds there (shared/scopes.py). Services get only
the public half (SERVICE_JWT_PUBLIC_KEY): none of them can mint a token for itself or another. The
private half is for whoever signs: SERVICE_JWT_PRIVATE_KEY in the CLI's environment, or under
AUTH_MODE=dev the key file in DATA_DIR that whoever starts the services creates (`dev_public_key_pem`).
Without a public key (clerk mode, nothing configured) a service accepts no service token at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from shared import keys
from shared.scopes import Scope
from shared.settings import SERVICES, Settings

SERVICE_ISSUER = "creditstream-service"
SERVICE_SUBJECT_PREFIX = "service:"
SERVICE_TOKEN_LIFETIME_SECONDS = 300
DEV_KEY_FILE = "service-jwt-key.pem"


@dataclass(frozen=True)
class ServiceKey:
    public: rsa.RSAPublicKey
    private: rsa.RSAPrivateKey | None = None

    @cached_property
    def kid(self) -> str:
        return keys.key_id(self.public, "service")

    def sign(
        self, caller: str, *, audience: str, scopes: Iterable[Scope], lifetime: int = SERVICE_TOKEN_LIFETIME_SECONDS
    ) -> str:
        """A token for `audience` (a service name) holding `scopes`, all of which must be that service's."""
        if self.private is None:
            raise RuntimeError("this process holds only the public service key: it cannot sign")
        if audience not in SERVICES:
            raise ValueError(f"no service {audience!r} to address a token to")
        held = sorted({Scope(scope) for scope in scopes})
        if foreign := [scope.value for scope in held if scope.audience != audience]:
            raise ValueError(f"scopes {foreign} are not {audience}'s")
        now = int(time.time())
        claims = {
            "iss": SERVICE_ISSUER,
            "sub": SERVICE_SUBJECT_PREFIX + caller,
            "aud": audience,
            "scope": [scope.value for scope in held],
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
        }
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid})

    @classmethod
    def of_private(cls, private: rsa.RSAPrivateKey) -> ServiceKey:
        return cls(public=private.public_key(), private=private)


def load_service_key(settings: Settings) -> ServiceKey | None:
    """What a service verifies service tokens with: the public key only, whatever the mode."""
    if settings.service_jwt_public_key:
        return ServiceKey(public=keys.public_from_pem(settings.service_jwt_public_key))
    return None


def dev_public_key_pem(data_dir: Path) -> str:
    """The public half of the dev service key in `data_dir` (created there, mode 0600, on first use), for
    whoever starts services under AUTH_MODE=dev to pass them as SERVICE_JWT_PUBLIC_KEY. The private half
    stays in the file, for the CLI and the tests to sign with."""
    return keys.public_pem(keys.load_or_create(data_dir / DEV_KEY_FILE).public_key()).decode()
