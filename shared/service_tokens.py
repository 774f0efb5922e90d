"""Service tokens: short-lived RS256 JWTs for service-to-service calls (and the operator CLI).

They are signed with a key of their own, never Clerk's, so no end user can hold one. Production
passes the key by env: SERVICE_JWT_PRIVATE_KEY (PEM) to every process that signs, and optionally
SERVICE_JWT_PUBLIC_KEY (PEM) to a process that only verifies. Under AUTH_MODE=dev, when neither is
set, every service shares one key generated in DATA_DIR. Without any key (clerk mode, nothing
configured) no service token is accepted at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from shared import keys
from shared.settings import Settings

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

    def sign(self, service: str, *, lifetime: int = SERVICE_TOKEN_LIFETIME_SECONDS) -> str:
        if self.private is None:
            raise RuntimeError("this process holds only the public service key: it cannot sign")
        now = int(time.time())
        claims = {
            "iss": SERVICE_ISSUER,
            "sub": SERVICE_SUBJECT_PREFIX + service,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
        }
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid})

    @classmethod
    def of_private(cls, private: rsa.RSAPrivateKey) -> ServiceKey:
        return cls(public=private.public_key(), private=private)


def load_service_key(settings: Settings) -> ServiceKey | None:
    if settings.service_jwt_private_key is not None:
        return ServiceKey.of_private(keys.private_from_pem(settings.service_jwt_private_key.get_secret_value()))
    if settings.service_jwt_public_key:
        return ServiceKey(public=keys.public_from_pem(settings.service_jwt_public_key))
    if settings.auth_mode == "dev":
        return ServiceKey.of_private(keys.load_or_create(settings.data_dir / DEV_KEY_FILE))
    return None
