"""The operator CLI."""

from __future__ import annotations

import typer
from rich.console import Console

from creditstream import deadletters

app = typer.Typer(help="creditstream operator CLI", no_args_is_help=True)
app.add_typer(deadletters.app, name="deadletters")
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
