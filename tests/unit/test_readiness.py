"""/readyz says what is wrong in words for operators, never in an exception's own words (they can name
hosts, users and connection strings): those go to the log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.media import worker
from shared import http
from shared.runtime import Runtime
from shared.settings import Settings

SECRET = 'connection to server at "db.internal.example" (10.1.2.3), port 5432 failed: password for user "cs"'


class Broken(Exception):
    pass


class FakePool:
    def __init__(self, fails: bool) -> None:
        self.fails = fails

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        if self.fails:
            raise Broken(SECRET)

        class Connection:
            async def execute(self, query: str) -> None:
                pass

        yield Connection()


class FakeNats:
    is_connected = True


class FakeJetStream:
    def __init__(self, fails: bool) -> None:
        self.fails = fails

    async def account_info(self) -> None:
        if self.fails:
            raise Broken(f"nats: {SECRET}")


def runtime(*, database: bool = True, nats: bool = True, alarms: list[Callable[[], Any]] | None = None) -> Runtime:
    settings = Settings(auth_mode="dev", database_url="postgresql:///x", nats_url="nats://127.0.0.1:4222")
    rt = Runtime("ledger", settings, FakePool(not database), FakeNats(), FakeJetStream(not nats))  # type: ignore[arg-type]
    rt.alarms.extend(alarms or [])
    return rt


async def parked() -> str:
    return "dead-lettered messages wait for a fix and `creditstream deadletters redrive` (ledger-identity: 1)"


async def broken_alarm() -> str:
    raise Broken(SECRET)


@pytest.fixture(autouse=True)
def logging_of_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http.telemetry, "setup", lambda service: None)  # leave the test's logging alone


@pytest.fixture
def service_app() -> FastAPI:
    async def start(app: FastAPI, rt: Runtime) -> None:
        pass

    settings = Settings(auth_mode="dev", database_url="postgresql:///x", nats_url="nats://127.0.0.1:4222")
    return http.create_app("ledger", settings, start, [])


def readyz(app: FastAPI) -> tuple[int, str | None]:
    response = TestClient(app).get("/readyz")  # no lifespan: app.state.runtime is the test's
    return response.status_code, response.json().get("detail")


@pytest.mark.parametrize(
    ("rt", "detail"),
    [
        (runtime(database=False), "database unreachable"),
        (runtime(nats=False), "NATS unreachable"),
        (runtime(alarms=[broken_alarm]), "an alarm could not be checked"),
    ],
)
def test_a_failure_is_named_by_what_failed_and_its_text_is_only_logged(
    service_app: FastAPI, rt: Runtime, detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    service_app.state.runtime = rt
    with caplog.at_level(logging.WARNING):
        assert readyz(service_app) == (503, detail)
    assert any(SECRET in str(record.exc_info[1]) for record in caplog.records if record.exc_info)


def test_the_alarms_problems_are_shown_as_written(service_app: FastAPI) -> None:
    service_app.state.runtime = runtime(alarms=[parked, broken_alarm])
    status, detail = readyz(service_app)
    assert status == 503 and detail is not None
    assert detail.startswith("dead-lettered messages wait for a fix") and "ledger-identity: 1" in detail
    assert "an alarm could not be checked" in detail and "db.internal" not in detail


def test_a_service_that_has_not_started_says_so_and_a_ready_one_is_ready(service_app: FastAPI) -> None:
    assert readyz(service_app) == (503, "starting")
    service_app.state.runtime = runtime()
    assert TestClient(service_app).get("/readyz").json() == {"status": "ready", "service": "ledger"}


def test_the_media_workers_readyz_names_what_failed_too() -> None:
    app = worker.create_app(Settings(auth_mode="dev", database_url="postgresql:///x", nats_url="nats://127.0.0.1:1"))
    assert readyz(app) == (503, "starting")
    app.state.runtime = runtime(database=False)
    assert readyz(app) == (503, "database unreachable")
    app.state.runtime = runtime()
    assert TestClient(app).get("/readyz").json() == {"status": "ready", "service": "media-worker"}
