"""The operator CLI."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from creditstream import deadletters, payments

app = typer.Typer(help="creditstream operator CLI", no_args_is_help=True)
app.add_typer(deadletters.app, name="deadletters")
app.add_typer(payments.app, name="payments")
console = Console(soft_wrap=True)


@app.command()
def up() -> None:
    """Start PostgreSQL, NATS, localstripe and the five services (embedded unless *_URL is set)."""
    from creditstream.up import run

    raise typer.Exit(run(console))


@app.command()
def streams() -> None:
    """Show each stream's and consumer's state, dead letters, and each service's readiness."""
    from creditstream.streams import show

    raise typer.Exit(show(console))


@app.command("clerk-webhook")
def clerk_webhook(
    event: Annotated[str, typer.Option("--type", help="user.created, user.updated or user.deleted")] = "user.created",
    clerk_id: Annotated[str, typer.Option(help="the Clerk user id")] = "user_demo",
    email: str = "demo@example.com",
    first_name: str | None = None,
    last_name: str | None = None,
) -> None:
    """Send identity a Svix-signed Clerk user event (secret: CLERK_WEBHOOK_SECRET, else the one `up` made)."""
    from creditstream.clerk_webhook import send

    raise typer.Exit(send(console, event, clerk_id=clerk_id, email=email, first_name=first_name, last_name=last_name))
