"""`creditstream payments reconcile`: have payments compare Stripe with our transactions and repair
what missed webhooks left, then print what it found and did. Safe to run any number of times."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from creditstream.connect import service_token, service_urls
from shared.scopes import Scope

app = typer.Typer(help="Payments: reconcile with Stripe.", no_args_is_help=True)
console = Console(soft_wrap=True)
DURATION = re.compile(r"(\d+)([mhd])")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str) -> datetime:
    """`30m`, `24h`, `7d` ago, or an ISO 8601 moment (UTC unless it says otherwise)."""
    if match := DURATION.fullmatch(text.strip()):
        return datetime.now(UTC) - timedelta(**{UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("a duration (30m, 24h, 7d) or an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def reconcile(
    since: Annotated[str, typer.Option(help="how far back: 30m, 24h, 7d or an ISO 8601 time")] = "24h",
) -> None:
    """Compare Stripe's PaymentIntents and events with our transactions; repair what webhooks missed."""
    moment = parse_since(since)
    token = service_token("creditstream-cli", audience="payments", scopes=[Scope.PAYMENTS_RECONCILE])
    if token is None:
        console.print("[red]No service key:[/] set SERVICE_JWT_PRIVATE_KEY, or DATA_DIR to where `up` keeps its key.")
        raise typer.Exit(2)
    url = f"{service_urls()['payments']}/api/admin/payments/reconcile"
    try:
        response = httpx.post(
            url, json={"since": moment.isoformat()}, headers={"Authorization": f"Bearer {token}"}, timeout=300
        )
    except httpx.HTTPError as exc:
        console.print(f"[red]payments did not answer at {url}:[/] {exc!r}")
        raise typer.Exit(1) from exc
    if not response.is_success:
        console.print(f"[red]{response.status_code}[/] from {url}")
        console.print(response.text, markup=False, highlight=False)
        raise typer.Exit(1)
    show(response.json())


def show(report: dict[str, Any]) -> None:
    console.print(
        f"Since {report['since']}: Stripe listed {report['events_listed']} events, "
        f"{len(report['events_recovered'])} of them never received before; "
        f"{report['payment_intents_checked']} PaymentIntents checked."
    )
    for repair in report["repaired"]:
        console.print(
            f"[green]Repaired[/] transaction {repair['transaction_id']} ({repair['payment_intent_id']}):"
            f" {repair['before']} → {repair['after']}, announced {', '.join(repair['announced'])}",
            highlight=False,
        )
    for intent in report["unknown_payment_intents"]:
        console.print(f"[yellow]At Stripe but none of our transactions:[/] {intent}")
    for refusal in report["refused"]:
        console.print(f"[red]Refused:[/] {refusal}")
    if not report["repaired"]:
        console.print("Nothing to repair: every transaction agrees with Stripe.")
