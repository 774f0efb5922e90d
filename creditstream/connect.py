"""Where the operator CLI finds the running system: the same environment `creditstream up` reads."""

from __future__ import annotations

import os

from shared.settings import DEFAULT_PORTS, SERVICES


def nats_url() -> str:
    return os.environ.get("NATS_URL") or f"nats://127.0.0.1:{os.environ.get('NATS_PORT') or 4222}"


def service_urls() -> dict[str, str]:
    host = os.environ.get("HOST") or "127.0.0.1"
    ports = {name: os.environ.get(f"{name.upper()}_PORT") or DEFAULT_PORTS[name] for name in SERVICES}
    return {name: f"http://{host}:{port}" for name, port in ports.items()}
