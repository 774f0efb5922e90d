"""Auth settings refuse unsafe or silently broken configurations."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.settings import Settings

BASE: dict[str, Any] = {"database_url": "postgresql:///x", "nats_url": "nats://127.0.0.1:4222"}


@pytest.fixture(autouse=True)
def _no_auth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test passes counts, not what the shell running the suite exports."""
    for name in ("AUTH_MODE", "CLERK_JWKS_URL", "CLERK_ISSUER", "CLERK_AUTHORIZED_PARTIES", "CLERK_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)


def test_auth_mode_has_no_default() -> None:
    with pytest.raises(ValidationError, match="auth_mode"):
        Settings(**BASE)


def test_clerk_mode_needs_a_jwks_url_and_authorized_parties() -> None:
    with pytest.raises(ValidationError, match="CLERK_JWKS_URL"):
        Settings(**BASE, auth_mode="clerk", clerk_authorized_parties="https://app.example.com")
    with pytest.raises(ValidationError, match="CLERK_AUTHORIZED_PARTIES"):
        Settings(**BASE, auth_mode="clerk", clerk_jwks_url="https://clerk.example.com/jwks.json")


def test_blank_values_from_compose_mean_unset() -> None:
    settings = Settings(
        **BASE,
        auth_mode="clerk",
        clerk_jwks_url="https://clerk.example.com/jwks.json",
        clerk_authorized_parties="https://a.example.com, https://b.example.com",
        clerk_issuer="",
        clerk_webhook_secret="",
    )
    assert settings.issuer is None and settings.clerk_webhook_secret is None
    assert settings.authorized_parties == ["https://a.example.com", "https://b.example.com"]
