"""RSA signing keys kept as PEM files or PEM text: dev-mode Clerk stand-in and service tokens."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


def key_id(public: rsa.RSAPublicKey, prefix: str) -> str:
    """A kid derived from the modulus, so every process holding the same key names it the same."""
    modulus = RSAAlgorithm.to_jwk(public, as_dict=True)["n"]
    return f"{prefix}-{hashlib.sha256(modulus.encode()).hexdigest()[:16]}"


def public_jwk(public: rsa.RSAPublicKey, kid: str) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def private_from_pem(pem: str | bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("expected an RSA private key in PEM")
    return key


def public_from_pem(pem: str | bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("expected an RSA public key in PEM")
    return key


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_or_create(path: Path) -> rsa.RSAPrivateKey:
    """The key in `path`, created there (mode 0600) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        pem = private_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        # O_EXCL: when several processes start together, one key wins and all of them read it.
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
    for _ in range(100):
        data = path.read_bytes()
        if data.strip().endswith(b"-----"):
            return private_from_pem(data)
        time.sleep(0.05)  # the winner of the O_EXCL race is still writing
    raise RuntimeError(f"signing key at {path} is incomplete")
