"""`creditstream adjust <user> <amount> --reason`: an admin adjustment through the ledger's API (never the
database), as an ADMIN_ADJUSTMENT entry. Its Idempotency-Key is printed: run it again with `--key` and the
ledger answers the first result instead of adjusting twice."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from rich.console import Console

from creditstream.connect import service_token, service_urls
from shared.auth import user_id_for
from shared.inputs import is_uuid
from shared.scopes import Scope


def adjust(console: Console, user: str, amount: int, reason: str, key: str | None) -> int:
    """0 when the ledger recorded it (or had, under this key), 1 when it refused or did not answer."""
    token = service_token("creditstream-cli", audience="ledger", scopes=[Scope.LEDGER_ADJUST])
    if token is None:
        console.print("[red]No service key:[/] set SERVICE_JWT_PRIVATE_KEY, or DATA_DIR to where `up` keeps its key.")
        return 2
    user_id = user if is_uuid(user) else user_id_for(user)  # a Clerk id names its user too
    key = key or f"cli-adjust-{uuid.uuid4()}"
    url = f"{service_urls()['ledger']}/api/admin/accounts/{user_id}/adjustments"
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    try:
        response = httpx.post(url, json={"amount": amount, "reason": reason}, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        console.print(f"[red]The ledger did not answer at {url}:[/] {exc!r}")
        console.print(f"Run it again with --key {key}: it will not adjust twice.", highlight=False)
        return 1
    if not response.is_success:
        problem: dict[str, Any] = response.json() if "json" in response.headers.get("content-type", "") else {}
        console.print(f"[red]Refused ({response.status_code}):[/] {problem.get('detail', response.text)}",
                      highlight=False)  # fmt: skip
        return 1
    entry = response.json()
    replayed = " (answered before under this key: nothing changed now)" if response.headers.get(
        "Idempotent-Replayed") else ""  # fmt: skip
    console.print(
        f"[green]Adjusted[/] {user_id} by {entry['amount']:+d}: balance {entry['balance_after']}{replayed}",
        highlight=False,
    )
    console.print(f"Idempotency-Key: {key}", highlight=False)
    return 0
