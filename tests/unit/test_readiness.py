"""/readyz says whether a copy can serve (its database, NATS, its background loops) in words for operators,
never in an exception's own words (they can name hosts, users and connection strings): those go to the log.
What it can serve through (a parked message, a stuck relay) is an alarm, shown by GET /alarms."""

from __future__ import annotations

import asyncio
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
from shared.scopes import Scope
from shared.service_tokens import ServiceKey
from shared.settings import Settings
from tests.unit.auth_keys import SigningKey

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


SERVICE_KEY = ServiceKey.of_private(SigningKey("svc").private)


@pytest.fixture
def service_app() -> FastAPI:
    async def start(app: FastAPI, rt: Runtime) -> None:
        pass

    settings = Settings(
        auth_mode="dev", database_url="postgresql:///x", nats_url="nats://127.0.0.1:4222",
        service_jwt_public_key=SigningKey.public_pem_of(SERVICE_KEY.private).decode(),  # type: ignore[arg-type]
    )  # fmt: skip
    return http.create_app("ledger", settings, start, [])


def service_token(app: FastAPI, scopes: list[Scope]) -> str:
    return SERVICE_KEY.sign("operator", audience="ledger", scopes=scopes)


def readyz(app: FastAPI) -> tuple[int, str | None]:
    response = TestClient(app).get("/readyz")  # no lifespan: app.state.runtime is the test's
    return response.status_code, response.json().get("detail")


@pytest.mark.parametrize(
    ("rt", "detail"),
    [
        (runtime(database=False), "database unreachable"),
        (runtime(nats=False), "NATS unreachable"),
    ],
)
def test_a_failure_is_named_by_what_failed_and_its_text_is_only_logged(
    service_app: FastAPI, rt: Runtime, detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    service_app.state.runtime = rt
    with caplog.at_level(logging.WARNING):
        assert readyz(service_app) == (503, detail)
    assert any(SECRET in str(record.exc_info[1]) for record in caplog.records if record.exc_info)


def alarms(app: FastAPI, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(app).get("/alarms", headers=headers)


def test_a_parked_message_is_an_alarm_shown_as_written_and_the_copy_stays_ready(
    service_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    service_app.state.runtime = runtime(alarms=[parked, broken_alarm])
    assert readyz(service_app) == (200, None), "it serves as well as it did: nothing to take out of service"
    operator = service_token(service_app, [Scope.LEDGER_ALARMS])
    with caplog.at_level(logging.WARNING):
        shown = alarms(service_app, operator)
    assert shown.status_code == 200
    assert shown.json()["service"] == "ledger"
    first, second = shown.json()["alarms"]
    assert first.startswith("dead-lettered messages wait for a fix") and "ledger-identity: 1" in first
    assert second == "an alarm could not be checked"
    assert any(SECRET in str(record.exc_info[1]) for record in caplog.records if record.exc_info)


def test_the_alarms_are_for_operators_only(service_app: FastAPI) -> None:
    service_app.state.runtime = runtime(alarms=[parked])
    assert alarms(service_app, None).status_code == 401
    assert alarms(service_app, service_token(service_app, [Scope.LEDGER_READ])).status_code == 403
    assert alarms(service_app, service_token(service_app, [Scope.LEDGER_ALARMS])).json()["alarms"] != []


async def test_a_background_loop_failing_is_an_alarm_and_one_that_stopped_makes_the_copy_unready() -> None:
    rt = runtime()

    async def failing() -> None:
        raise Broken(SECRET)

    async def finished() -> None:
        return None

    rt.spawn("relay", failing)
    rt.spawn("consumer", finished)
    await asyncio.sleep(0.05)
    try:
        assert await rt.not_ready() == "background loops stopped: ledger:consumer"
        [problem] = await rt.problems()
        assert problem.startswith("background loops fail and restart: relay (1 failures, the last 0s ago: Broken)")
        assert "db.internal" not in problem
    finally:
        for task in rt.tasks:
            task.cancel()
        await asyncio.gather(*rt.tasks, return_exceptions=True)


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
