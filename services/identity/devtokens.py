"""Dev-mode token signing (AUTH_MODE=dev only): a local RSA key stands in for Clerk's."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.settings import DEV_AUTHORIZED_PARTY, DEV_ISSUER

TOKEN_LIFETIME_SECONDS = 3600


class DevSigner:
    def __init__(self, key_path: Path) -> None:
        self._key = _load_or_create(key_path)
        public = self._key.public_key()
        modulus = RSAAlgorithm.to_jwk(public, as_dict=True)["n"]
        self.kid = "dev-" + hashlib.sha256(modulus.encode()).hexdigest()[:16]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [_public_jwk(self._key.public_key(), self.kid)]}

    def sign(self, claims: dict[str, Any], *, lifetime: int = TOKEN_LIFETIME_SECONDS) -> str:
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


def _public_jwk(public: rsa.RSAPublicKey, kid: str) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def _load_or_create(path: Path) -> rsa.RSAPrivateKey:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # O_EXCL: when two identity processes start together, one key wins and both read it.
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
    for _ in range(50):
        data = path.read_bytes()
        if data.strip().endswith(b"-----"):
            key = serialization.load_pem_private_key(data, password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            return key
        time.sleep(0.05)
    raise RuntimeError(f"dev signing key at {path} is incomplete")
