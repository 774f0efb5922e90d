"""Session fixtures: real PostgreSQL and real nats-server in temp dirs, and the five services as
subprocesses on free ports, so the suite never collides with a running `make up`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from shared import bus
from shared.bus.credentials import Credentials
from shared.testing.nats import EmbeddedNats
from shared.testing.postgres import EmbeddedPostgres, fresh_database
from shared.testing.servers import ServiceProcess, five_services

# Support modules assert too: show their differences the way a test's own asserts do.
pytest.register_assert_rewrite("tests.e2e.convergence", "tests.e2e.auth_support")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("creditstream")


@pytest.fixture(scope="session")
def database_url(workdir: Path) -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    server = EmbeddedPostgres(workdir / "pg")
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def system_nats(workdir: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(workdir / "nats").start()
    yield server
    server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A NATS server of the test's own, for tests that publish to the streams directly: with the users of
    shared/bus/users.py and `tests` (harness), which may do anything, for a test of one mechanism that plays
    every part (a consumer's test publishes what it consumes)."""
    server = EmbeddedNats(tmp_path / "nats", harness=True).start()
    yield server
    server.stop()


@pytest.fixture
def schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@dataclass
class System:
    env: dict[str, str]
    services: dict[str, ServiceProcess]
    nats_users: Credentials

    async def connect(self, user: str, name: str = "test") -> Client:
        """A NATS connection as `user` of shared/bus/users.py (a test publishing identity's events logs in
        as identity, one reading a stream as ops): every test runs with the bus's permissions on."""
        return await bus.connect(self.env["NATS_URL"], name, self.nats_users.login(user))

    def url(self, service: str) -> str:
        return self.services[service].url

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`creditstream <args>` against this system, as an operator's shell finds it (wide: tables unwrapped)."""
        ports = {f"{n.upper()}_PORT": str(p.port) for n, p in self.services.items() if n != "media-worker"}
        command = [str(Path(sys.executable).parent / "creditstream"), *args]
        env = {**os.environ, **self.env, **ports, "COLUMNS": "200"}
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)

    def token(
        self, clerk_id: str, *, email: str | None = None, role: str = "user", org_id: str | None = None,
        org_role: str = "org:member", org_slug: str | None = None,
    ) -> str:  # fmt: skip
        """A dev session token; with `org_id`, one active in that organization (as after Clerk's org switcher)."""
        asked: dict[str, str | None] = {"clerk_id": clerk_id, "email": email or f"{clerk_id}@example.com", "role": role}
        if org_id is not None:
            asked |= {"org_id": org_id, "org_role": org_role, "org_slug": org_slug}
        response = httpx.post(f"{self.url('identity')}/dev/token", json=asked)
        response.raise_for_status()
        return response.json()["token"]


@contextlib.contextmanager
def running_system(data_dir: Path, database_url: str, nats: EmbeddedNats, **settings: str) -> Iterator[System]:
    """The five services as subprocesses on free ports, on the given database and NATS."""
    with five_services(data_dir, database_url, nats, **settings) as (env, processes):
        yield System(env, processes, nats.credentials)


@pytest.fixture(scope="session")
def system(workdir: Path, database_url: str, system_nats: EmbeddedNats) -> Iterator[System]:
    with running_system(workdir / "data", database_url, system_nats) as running:
        yield running


@contextlib.contextmanager
def system_of_its_own(database_url: str, workdir: Path, **settings: str) -> Iterator[tuple[System, EmbeddedNats]]:
    """A whole system (a fresh database, its own nats-server, the services) for a module that breaks things
    on purpose or must know everything written: nothing of it reaches the session's `system`."""
    with fresh_database(database_url) as url:
        nats = EmbeddedNats(workdir / "nats").start()
        try:
            with running_system(workdir / "data", url, nats, **settings) as running:
                yield running, nats
        finally:
            nats.stop()


@pytest.fixture(scope="module")
def isolated_system(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_of_its_own(database_url, tmp_path_factory.mktemp("isolated"), MAX_DELIVER="2") as (running, _):
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failing end-to-end test, attach the tail of every service's log to the report."""
    outcome: Any = yield
    report = outcome.get_result()
    system = getattr(item, "funcargs", {}).get("system")
    if report.failed and isinstance(system, System):
        for name, process in system.services.items():
            report.sections.append((f"{name} log (last 40 lines)", "\n".join(process.lines[-40:])))
