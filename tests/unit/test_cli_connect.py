"""The operator CLI finds the system the way `creditstream up` placed it, a NATS cluster too."""

from __future__ import annotations

import pytest

from creditstream.connect import nats_url, service_urls, stream_replicas
from shared import bus


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


def test_the_cli_creates_streams_with_stream_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAM_REPLICAS", raising=False)
    assert stream_replicas() == 1
    monkeypatch.setenv("STREAM_REPLICAS", "3")
    assert stream_replicas() == 3


def test_a_comma_separated_nats_url_names_each_node_of_a_cluster() -> None:
    url = "nats://127.0.0.1:4222, nats://127.0.0.1:4223,nats://127.0.0.1:4224"
    assert bus.servers(url) == ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"]
    assert bus.servers("nats://127.0.0.1:4222") == ["nats://127.0.0.1:4222"]
