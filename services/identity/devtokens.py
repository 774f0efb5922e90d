"""Dev-mode token signing (AUTH_MODE=dev only): a local RSA key stands in for Clerk's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt

from shared import keys
from shared.settings import DEV_AUTHORIZED_PARTY, DEV_ISSUER

TOKEN_LIFETIME_SECONDS = 3600


class DevSigner:
    def __init__(self, key_path: Path) -> None:
        self._key = keys.load_or_create(key_path)
        self.kid = keys.key_id(self._key.public_key(), "dev")

    def jwks(self) -> dict[str, Any]:
        return {"keys": [keys.public_jwk(self._key.public_key(), self.kid)]}

    def sign(self, claims: dict[str, Any], *, lifetime: int = TOKEN_LIFETIME_SECONDS) -> str:
        """A token shaped like a Clerk session token: iss, azp, iat, nbf, exp, sub."""
        now = int(time.time())
        payload = {
            "iss": DEV_ISSUER,
            "azp": DEV_AUTHORIZED_PARTY,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
        }
        payload.update(claims)
        return jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": self.kid})
