"""`creditstream clerk-webhook`: a Clerk user event, signed the way Svix signs Clerk's deliveries, posted
to identity's /webhooks/clerk, so the webhook path can be tried without a Clerk instance. Also the
dev signing secret that `creditstream up` keeps in DATA_DIR."""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from svix.webhooks import Webhook

from creditstream.connect import service_urls

SECRET_FILE = "clerk-webhook-secret"  # noqa: S105  # the file that holds it, not a secret
EVENT_TYPES = ("user.created", "user.updated", "user.deleted")


def data_dir() -> Path:
    return Path(os.environ.get("DATA_DIR") or ".data")


def dev_secret(directory: Path) -> str:
    """The dev signing secret kept in `directory` (owner-only), made on first use so a restart of
    `creditstream up` keeps it. Svix format: whsec_ + base64 of 32 random bytes."""
    path = directory / SECRET_FILE
    if (kept := _read_secret(path)) is not None:
        return kept
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    partial = path.with_name(f".{SECRET_FILE}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover partial file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as file:
        file.write(secret + "\n")
    os.replace(partial, path)  # a reader never sees half a secret
    return secret


def _read_secret(path: Path) -> str | None:
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        return None
    return secret if secret.startswith("whsec_") else None


def configured_secret() -> str | None:
    """What identity verifies with: CLERK_WEBHOOK_SECRET, else the one `creditstream up` made."""
    return os.environ.get("CLERK_WEBHOOK_SECRET", "").strip() or _read_secret(data_dir() / SECRET_FILE)


def clerk_event(kind: str, clerk_id: str, email: str, first_name: str | None, last_name: str | None) -> dict[str, Any]:
    """The body Clerk sends: a user object for created/updated, just the id for deleted."""
    if kind == "user.deleted":
        data: dict[str, Any] = {"id": clerk_id, "object": "user", "deleted": True}
    else:
        data = {
            "id": clerk_id,
            "object": "user",
            "email_addresses": [{"id": "idn_1", "email_address": email}],
            "primary_email_address_id": "idn_1",
            "first_name": first_name,
            "last_name": last_name,
            "image_url": None,
            "public_metadata": {},
        }
    return {"type": kind, "object": "event", "timestamp": int(time.time() * 1000), "data": data}


def svix_headers(secret: str, body: str) -> dict[str, str]:
    msg_id = f"msg_{uuid.uuid4().hex}"
    at = datetime.now(UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
    }


def send(
    console: Console, kind: str, *, clerk_id: str, email: str, first_name: str | None, last_name: str | None
) -> int:
    """Sign and post one event; print identity's answer. 0 on a 2xx, 1 otherwise, 2 on bad input."""
    if kind not in EVENT_TYPES:
        console.print(f"[red]--type must be one of {', '.join(EVENT_TYPES)}[/]")
        return 2
    secret = configured_secret()
    if secret is None:
        console.print(
            f"[red]No webhook secret:[/] set CLERK_WEBHOOK_SECRET, or start `creditstream up` with AUTH_MODE=dev"
            f" once (it writes {data_dir() / SECRET_FILE})."
        )
        return 2
    body = json.dumps(clerk_event(kind, clerk_id, email, first_name, last_name))
    url = f"{service_urls()['identity']}/webhooks/clerk"
    try:
        response = httpx.post(url, content=body.encode(), headers=svix_headers(secret, body), timeout=30)
    except httpx.HTTPError as exc:
        console.print(f"[red]identity did not answer at {url}:[/] {exc!r}")
        return 1
    colour = "green" if response.is_success else "red"
    console.print(f"[{colour}]{response.status_code} {response.reason_phrase}[/] from {url}")
    console.print(response.text, markup=False, highlight=False)
    return 0 if response.is_success else 1
