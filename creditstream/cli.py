"""The operator CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from creditstream import deadletters, payments
from shared.settings import SERVICES

app = typer.Typer(help="creditstream operator CLI", no_args_is_help=True)
app.add_typer(deadletters.app, name="deadletters")
app.add_typer(payments.app, name="payments")
console = Console(soft_wrap=True)


@app.command()
def up() -> None:
    """Start PostgreSQL, NATS, localstripe and the five services (embedded unless *_URL is set)."""
    from creditstream.up import run

    raise typer.Exit(run(console))


streams_app = typer.Typer(help="The NATS streams: their state, or a refill from PostgreSQL.")
app.add_typer(streams_app, name="streams")


@streams_app.callback(invoke_without_command=True)
def streams(context: typer.Context) -> None:
    """Show each stream's and consumer's state, dead letters, and each service's readiness."""
    if context.invoked_subcommand is None:
        from creditstream.streams import show

        raise typer.Exit(show(console))


@streams_app.command("rebuild")
def streams_rebuild() -> None:
    """Refill lost streams from PostgreSQL (the event store and the outboxes), with the original event ids."""
    from creditstream.rebuild import rebuild

    raise typer.Exit(rebuild(console))


@streams_app.command("ensure")
def streams_ensure() -> None:
    """Create the streams (or bring their settings up to date) as ops, before any service starts:
    services may not create them. STREAM_REPLICAS sets their replicas (3 on a three-node cluster)."""
    from creditstream.streams import ensure

    raise typer.Exit(ensure(console))


@app.command("nats-config")
def nats_config(
    hashes: Annotated[
        Path | None, typer.Option(help="a JSON file {user: bcrypt hash}: write the hashes into the block")
    ] = None,
    write: Annotated[
        list[Path] | None, typer.Option(help="rewrite the block in this file (a .conf, or a YAML holding one)")
    ] = None,
) -> None:
    """Print nats-server's `authorization` block for the users of shared/bus/users.py: each password read from
    the server's environment ($NATS_PASSWORD_<USER>), or the bcrypt hashes of --hashes. --write: update the
    generated block of each file in place instead."""
    from creditstream import deploy_config

    block = deploy_config.nats_block(deploy_config.from_hashes(hashes) if hashes else deploy_config.from_environment)
    if not write:
        typer.echo(block, nl=False)
    for path in write or ():
        path.write_text(deploy_config.rewrite(path.read_text(), block))
        console.print(f"rewrote the authorization block of {path}")


@app.command("postgres-init")
def postgres_init(
    write: Annotated[Path | None, typer.Option(help="write it to this file instead of printing it")] = None,
) -> None:
    """Print the SQL that makes the database roles of shared/db_roles.py, passwords as psql variables."""
    from creditstream.deploy_config import postgres_init as render

    if write is None:
        typer.echo(render(), nl=False)
    else:
        write.write_text(render())


@app.command()
def migrate(
    status: Annotated[
        bool, typer.Option("--status", help="list applied and pending migrations; exit 1 if any is pending")
    ] = False,
    service: Annotated[
        str | None, typer.Option(help="only this service's schema, as DATABASE_URL's login (that service's own)")
    ] = None,
) -> None:
    """Apply every service's pending schema migrations, in order, each schema under a lock (a second run at
    once waits, then finds nothing to do). Exit 1 when one fails (it is rolled back)."""
    from creditstream.migrate import run

    if service is not None and service not in SERVICES:
        console.print(f"[red]No service {service!r}:[/] one of {', '.join(SERVICES)}.")
        raise typer.Exit(2)
    raise typer.Exit(run(console, status, service))


@app.command()
def erase(user_id: Annotated[str, typer.Argument(help="the user's id (uuid)")]) -> None:
    """Forget a user (GDPR Art. 17): identity blanks their profile and deletes their profile messages from
    the IDENTITY stream, projections blanks theirs, media deletes their records and files; the ledger's and
    payments' records stay under the pseudonymous id. Exit 1 when identity refuses (404: no such user)."""
    from creditstream.erase import run

    raise typer.Exit(run(console, user_id))


@app.command()
def audit() -> None:
    """Recompute every account from the LEDGER stream; compare with the ledger's event store and accounts and
    with the projections read models. Exit 1 on any difference, naming the account and the first event."""
    from creditstream.audit import run

    raise typer.Exit(run(console))


@app.command()
def top(
    interval: Annotated[float, typer.Option(help="seconds between two scrapes")] = 2.0,
    once: Annotated[bool, typer.Option(help="print one view (two scrapes apart) and exit")] = False,
) -> None:
    """A live view of every process's /metrics: rates, readiness, pending, dead letters, backlogs and lag.
    Exit 1 with --once when a process does not answer."""
    from creditstream.top import run

    raise typer.Exit(run(console, interval, once))


@app.command()
def replay(
    read_model: Annotated[str, typer.Argument(help="the read model to rebuild: projections")],
    timeout: Annotated[float, typer.Option(help="seconds to follow it for")] = 3600,
) -> None:
    """Rebuild a read model from sequence 1 beside the live one, then swap it in atomically (blue/green)."""
    from creditstream.replay import replay as run

    raise typer.Exit(run(console, read_model, timeout))


@app.command()
def finance(
    month: Annotated[str | None, typer.Option(help="YYYY-MM (UTC); default: this month")] = None,
    account: Annotated[str | None, typer.Option(help="one account's figures only (its id)")] = None,
) -> None:
    """The month's revenue per currency: deferred at its start, sold, recognised, breakage, refunded, deferred
    at its end; and what was recognised by operation."""
    from creditstream.finance import run

    raise typer.Exit(run(console, month, account))


# Unknown options taken as arguments: a negative amount (-5) is an amount, not an option.
@app.command(context_settings={"ignore_unknown_options": True})
def adjust(
    user: Annotated[str, typer.Argument(help="the user id, or their Clerk id")],
    amount: Annotated[int, typer.Argument(help="credits to add (or, negative, to take)")],
    reason: Annotated[str, typer.Option(help="why: recorded with the entry")],
    key: Annotated[str | None, typer.Option(help="the Idempotency-Key of an earlier try, to retry it")] = None,
) -> None:
    """An admin adjustment through the ledger (an ADMIN_ADJUSTMENT entry; never below zero)."""
    from creditstream.adjust import adjust as run

    raise typer.Exit(run(console, user, amount, reason, key))


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
