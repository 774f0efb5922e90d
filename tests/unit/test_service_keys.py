"""Services hold only the public service key: whoever starts them keeps the private one (in dev, a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared import keys
from shared.service_tokens import DEV_KEY_FILE, ServiceKey, dev_public_key_pem, load_service_key
from shared.settings import Settings

BASE: dict[str, Any] = {"database_url": "postgresql:///x", "nats_url": "nats://127.0.0.1:4222", "auth_mode": "dev"}


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SERVICE_JWT_PUBLIC_KEY", "SERVICE_JWT_PRIVATE_KEY", "DATA_DIR", "HOST"):
        monkeypatch.delenv(name, raising=False)


def test_settings_have_no_place_for_a_private_service_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pem = keys.private_pem(keys.load_or_create(tmp_path / "k.pem")).decode()
    monkeypatch.setenv("SERVICE_JWT_PRIVATE_KEY", pem)
    settings = Settings(**BASE, data_dir=tmp_path / "data")
    assert not [name for name in Settings.model_fields if "private" in name]
    assert "PRIVATE KEY" not in repr(settings.model_dump())
    assert load_service_key(settings) is None  # given a private key only, a service trusts no service token


def test_a_dev_service_verifies_with_the_public_half_of_the_dev_key(tmp_path: Path) -> None:
    public = dev_public_key_pem(tmp_path)
    assert (tmp_path / DEV_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert dev_public_key_pem(tmp_path) == public, "the same key on every start"
    loaded = load_service_key(Settings(**BASE, data_dir=tmp_path, service_jwt_public_key=public))
    assert loaded is not None and loaded.private is None
    signer = ServiceKey.of_private(keys.load_or_create(tmp_path / DEV_KEY_FILE))
    assert loaded.kid == signer.kid
    with pytest.raises(RuntimeError, match="cannot sign"):
        loaded.sign("ledger", audience="ledger", scopes=[])


def test_a_dev_service_never_reads_or_makes_the_private_key_file(tmp_path: Path) -> None:
    assert load_service_key(Settings(**BASE, data_dir=tmp_path)) is None
    assert not (tmp_path / DEV_KEY_FILE).exists()
