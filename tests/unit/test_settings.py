"""Settings come from the environment and refuse unsafe or incomplete configurations."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import Settings

EVERY_INTERFACE = "0.0.0.0"  # noqa: S104  # what the tests pass, not what they bind
BASE = {"DATABASE_URL": "postgresql://db/x", "NATS_URL": "nats://127.0.0.1:4222"}


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key in ("AUTH_MODE", "CLERK_JWKS_URL", "CLERK_AUTHORIZED_PARTIES", "ADMIN_CLERK_IDS", "HOST"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {**BASE, **env}.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_a_config_without_auth_mode_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="auth_mode"):
        settings(monkeypatch)


def test_clerk_mode_needs_a_jwks_url(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="CLERK_JWKS_URL"):
        settings(monkeypatch, AUTH_MODE="clerk")


def test_dev_mode_verifies_against_identitys_own_jwks(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch, AUTH_MODE="dev", IDENTITY_PORT="9101")
    assert s.jwks_url == "http://127.0.0.1:9101/.well-known/jwks.json"
    assert s.issuer == "creditstream-dev"


def test_lists_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(
        monkeypatch,
        AUTH_MODE="clerk",
        CLERK_JWKS_URL="https://clerk.example.com/.well-known/jwks.json",
        CLERK_AUTHORIZED_PARTIES="https://app.example.com, https://admin.example.com",
        ADMIN_CLERK_IDS="user_1,user_2",
    )
    assert s.authorized_parties == ["https://app.example.com", "https://admin.example.com"]
    assert s.admin_clerk_ids == ["user_1", "user_2"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.10.0.3", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_dev_mode_starts_on_a_loopback_address(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    assert settings(monkeypatch, AUTH_MODE="dev", HOST=host).host == host


@pytest.mark.parametrize("host", [EVERY_INTERFACE, "::", "10.1.2.3", "192.168.0.10", "localhost.evil.test"])
def test_dev_mode_refuses_to_start_on_any_other_address(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    with pytest.raises(ValidationError, match="HOST must be a loopback address"):
        settings(monkeypatch, AUTH_MODE="dev", HOST=host)


def test_clerk_mode_may_listen_on_every_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    clerk = {"CLERK_JWKS_URL": "https://clerk.example.com/jwks.json", "CLERK_AUTHORIZED_PARTIES": "https://a.example"}
    assert settings(monkeypatch, AUTH_MODE="clerk", HOST=EVERY_INTERFACE, **clerk).host == EVERY_INTERFACE
