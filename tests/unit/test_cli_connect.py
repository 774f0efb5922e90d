"""The operator CLI finds the system the way `creditstream up` placed it."""

from __future__ import annotations

import pytest

from creditstream.connect import nats_url, service_urls


def test_the_cli_honours_nats_port_when_no_nats_url_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NATS_URL", raising=False)
    monkeypatch.setenv("NATS_PORT", "4333")
    assert nats_url() == "nats://127.0.0.1:4333"
    monkeypatch.setenv("NATS_URL", "nats://nats.internal:4222")
    assert nats_url() == "nats://nats.internal:4222"


def test_the_cli_finds_each_service_on_its_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("IDENTITY_PORT", raising=False)
    monkeypatch.setenv("LEDGER_PORT", "9002")
    urls = service_urls()
    assert (urls["ledger"], urls["identity"]) == ("http://127.0.0.1:9002", "http://127.0.0.1:8001")
