"""The system under test, started from nothing in a temp dir: embedded PostgreSQL and NATS on free
ports, the five services (started by `five_services`, as the tests start them), and the naive
baseline service beside them. Nothing collides with `make up` or a test run."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared.testing.nats import EmbeddedNats
from shared.testing.postgres import EmbeddedPostgres
from shared.testing.servers import ServiceProcess, five_services
from shared.testing.waiting import free_port, stop, wait_until

UVICORN = (sys.executable, "-m", "uvicorn", "--factory", "bench.naive:create_app")


class NaiveProcess:
    """bench/naive.py as its own uvicorn process (one worker, as each service runs)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = env
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> NaiveProcess:
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(
                [*UVICORN, "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._up, timeout=60, interval=0.1, what="the naive service's /healthz")
        return self

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError("the naive service exited:\n" + self._log.read_text()[-4000:])
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=15)


@dataclass
class System:
    env: dict[str, str]
    postgres: EmbeddedPostgres
    postgres_dir: Path
    nats: EmbeddedNats
    services: dict[str, ServiceProcess]
    naive: NaiveProcess

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def url(self, service: str) -> str:
        return self.services[service].url

    def pids(self) -> dict[str, tuple[int, bool]]:
        """Every process a window accounts for: name → (pid, whether its children count too)."""
        found = {name: (int(p.pid or 0), False) for name, p in self.services.items()}
        assert self.naive.process is not None and self.nats.process is not None
        found["naive"] = (self.naive.process.pid, False)
        found["nats-server"] = (self.nats.process.pid, False)
        # The postmaster forks a backend per connection: its whole tree is PostgreSQL's share.
        found["postgres"] = (int((self.postgres_dir / "postmaster.pid").read_text().split()[0]), True)
        return found


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[System]:
    postgres_dir = workdir / "pg"
    postgres = EmbeddedPostgres(postgres_dir)
    nats = EmbeddedNats(workdir / "nats").start()
    try:
        with five_services(workdir / "data", postgres.url, nats) as (env, services):
            naive = NaiveProcess(env, workdir / "naive.log").start()
            try:
                yield System(env, postgres, postgres_dir, nats, services, naive)
            finally:
                naive.stop()
    finally:
        nats.stop()
        postgres.stop()
