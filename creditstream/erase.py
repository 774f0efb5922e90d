"""`creditstream erase USER_ID`: forget a user (GDPR Art. 17) as Clerk's user.deleted does, through
identity's admin API with an `identity:erase` service token."""

from __future__ import annotations

import httpx
from rich.console import Console

from creditstream.connect import service_token, service_urls
from shared.scopes import Scope


def run(console: Console, user_id: str) -> int:
    token = service_token("creditstream-cli", audience="identity", scopes=[Scope.IDENTITY_ERASE])
    if token is None:
        console.print("[red]No service key:[/] set SERVICE_JWT_PRIVATE_KEY, or DATA_DIR to where `up` keeps its key.")
        return 2
    url = f"{service_urls()['identity']}/api/admin/users/{user_id}/erase"
    try:
        response = httpx.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as exc:
        console.print(f"[red]identity did not answer at {url}:[/] {exc!r}")
        return 1
    if not response.is_success:
        console.print(f"[red]{response.status_code}[/] from {url}", highlight=False)
        console.print(response.text, markup=False, highlight=False)
        return 1
    erased = response.json()
    console.print(
        f"Erased user {erased['id']} at {erased['erased_at']}: identity has forgotten them; every other service"
        " drops what it holds of them within seconds (their credits and payments stay under this id).",
        highlight=False,
    )
    return 0
