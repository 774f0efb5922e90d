"""The operator CLI."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(help="creditstream operator CLI", no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command()
def up() -> None:
    """Start PostgreSQL, NATS, localstripe and the five services (embedded unless *_URL is set)."""
    from creditstream.up import run

    raise typer.Exit(run(console))


@app.command()
def streams() -> None:
    """Show each stream's and consumer's state."""
    from creditstream.streams import show

    raise typer.Exit(show(console))
