"""Keys, a JWKS server and token forgery for the token-rule tests: everything a test signs with."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared import keys

ISSUER = "https://clerk.example.test"
PARTY = "https://app.example.test"


class SigningKey:
    def __init__(self, prefix: str = "test") -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = keys.key_id(self.private.public_key(), prefix)

    def jwk(self) -> dict[str, Any]:
        return keys.public_jwk(self.private.public_key(), self.kid)

    def public_pem(self) -> bytes:
        return self.public_pem_of(self.private)

    @staticmethod
    def public_pem_of(private: rsa.RSAPrivateKey) -> bytes:
        return private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], *, kid: str | None = None, **overrides: Any) -> str:
        return jwt.encode(
            {**session_claims(**overrides), **claims},
            self.private,
            algorithm="RS256",
            headers={"kid": kid or self.kid},
        )


def session_claims(**overrides: Any) -> dict[str, Any]:
    """A Clerk-shaped session token body, valid for a minute."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "user_test", "iss": ISSUER, "azp": PARTY, "iat": now, "nbf": now, "exp": now + 60}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    """A token with any header and no signature (`alg: none`)."""
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."


def hs256_with(secret: bytes, claims: dict[str, Any], kid: str) -> str:
    """The algorithm-confusion forgery: HMAC keyed with the (public) RSA key's PEM bytes.
    PyJWT refuses to make one, so it is built by hand."""
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': kid}).encode())}." + _b64(
        json.dumps(claims).encode()
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


class JwksServer:
    """Serves `keys` as a JWKS on 127.0.0.1 and counts the fetches."""

    def __init__(self, *signing_keys: SigningKey) -> None:
        self.keys = list(signing_keys)
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                body = json.dumps({"keys": [k.jwk() for k in server.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/.well-known/jwks.json"

    @contextmanager
    def running(self) -> Iterator[JwksServer]:
        thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()
