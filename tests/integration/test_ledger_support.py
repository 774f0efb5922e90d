"""Helpers the ledger's integration and fault tests share (this module holds no tests).

A `LedgerCluster` is N ledger processes against one fresh database and one NATS server of its own,
so a test can kill and restart them without disturbing the session's `system`. Calls use service
tokens signed with the cluster's dev service key, as another service of ours would.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats.js.errors

from services.ledger import store
from services.ledger.application import Ledger
from shared import keys, migrations
from shared.contracts import Envelope
from shared.scopes import of_audience
from shared.service_tokens import DEV_KEY_FILE, ServiceKey, dev_public_key_pem
from shared.testing.nats import EmbeddedNats
from shared.testing.postgres import fresh_database
from shared.testing.servers import ServiceProcess, service_env
from shared.testing.waiting import free_port


class LedgerCluster:
    def __init__(self, database_url: str, nats: EmbeddedNats, data_dir: Path, size: int = 1) -> None:
        self.database_url = database_url
        self.nats = nats
        self.data_dir = data_dir
        self.env = service_env(
            {
                "AUTH_MODE": "dev",
                "DATABASE_URL": database_url,
                **nats.env("ledger"),
                "DATA_DIR": str(data_dir),
                "SERVICE_JWT_PUBLIC_KEY": dev_public_key_pem(data_dir),
                "IDENTITY_PORT": str(free_port()),  # nothing listens: only service tokens are used
            }
        )
        self.processes = [ServiceProcess("ledger", free_port(), self.env, echo=None) for _ in range(size)]

    def start(self, timeout: float = 90) -> LedgerCluster:
        self.nats.create_streams()
        asyncio.run(migrations.apply(self.database_url, "ledger", migrations.plan("ledger")))
        for process in self.processes:
            process.start()
        for process in self.processes:
            process.wait_ready(timeout)
        return self

    def restart(self, index: int, timeout: float = 90) -> ServiceProcess:
        old = self.processes[index]
        new = ServiceProcess("ledger", old.port, self.env, echo=None).start()
        new.wait_ready(timeout)
        self.processes[index] = new
        return new

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def service_token(self) -> str:
        """A token holding every ledger scope: these tests act as each of the ledger's callers."""
        key = ServiceKey.of_private(keys.load_or_create(self.data_dir / DEV_KEY_FILE))
        return key.sign("tests", audience="ledger", scopes=of_audience("ledger"))

    def headers(self, key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.service_token()}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def url(self, index: int = 0) -> str:
        return self.processes[index].url


@contextlib.contextmanager
def ledger_cluster(database_url: str, tmp_path: Path, size: int = 1) -> Iterator[LedgerCluster]:
    with fresh_database(database_url) as url:
        server = EmbeddedNats(tmp_path / "nats").start()
        cluster = LedgerCluster(url, server, tmp_path / "data", size)
        try:
            yield cluster.start()
        finally:
            cluster.stop()
            server.stop()


def grant(cluster: LedgerCluster, user_id: str, amount: int, key: str | None = None) -> dict[str, Any]:
    response = httpx.post(
        f"{cluster.url()}/api/accounts/{user_id}/grants",
        json={"amount": amount, "type": "PURCHASE", "description": "test credits"},
        headers=cluster.headers(key or f"grant-{uuid.uuid4()}"),
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()


def stored_events(database_url: str, user_id: str) -> list[Any]:
    """Every event of the account, read straight from the ledger's event store."""
    ledger = Ledger(env=store.eventsourcing_env(database_url))
    try:
        return list(ledger.repository.event_store.get(uuid.UUID(user_id)))
    finally:
        ledger.close()


def stream_messages(server: EmbeddedNats, stream: str = "LEDGER") -> list[tuple[Envelope, dict[str, str]]]:
    """Every message on `stream`, in order, with its headers."""

    async def read() -> list[tuple[Envelope, dict[str, str]]]:
        nc = await server.connect("ops")
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            found = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    msg = await js.get_msg(stream, seq=seq)
                    found.append((Envelope.from_bytes(msg.data or b""), dict(msg.headers or {})))
            return found
        finally:
            await nc.close()

    return asyncio.run(read())
