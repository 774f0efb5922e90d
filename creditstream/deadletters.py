"""`creditstream deadletters`: what consumers gave up on, and re-driving it to them after a fix."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from creditstream.connect import connect_nats
from shared.bus import deadletters

app = typer.Typer(help="List dead-lettered messages; re-drive them after a fix.", no_args_is_help=False)
console = Console(soft_wrap=True)
Consumer = Annotated[str | None, typer.Option(help="only this consumer's (e.g. projections-ledger)")]


@app.callback(invoke_without_command=True)
def show(ctx: typer.Context, consumer: Consumer = None) -> None:
    """List the parked messages (the default)."""
    if ctx.invoked_subcommand is None:
        letters = asyncio.run(_listing(consumer))
        table = Table(title=f"dead letters ({len(letters)})")
        for column in ("seq", "consumer", "subject", "from", "event", "reason"):
            table.add_column(column, overflow="fold")
        for letter in letters:
            origin = f"{letter.origin_stream} #{letter.origin_seq}" if letter.origin_stream else "?"
            event = str(letter.event.get("id") or "not an envelope")
            table.add_row(str(letter.seq), letter.consumer, letter.subject, origin, event, letter.reason)
        console.print(table)


@app.command()
def redrive(
    consumer: Consumer = None,
    seq: Annotated[list[int] | None, typer.Option(help="only these dead letters (repeatable)")] = None,
) -> None:
    """Hand each parked message back to the consumer that gave up on it; it applies it once, then it is gone."""
    results = asyncio.run(_redrive(consumer, set(seq or ())))
    for letter, (status, reason) in results:
        colour = "green" if status == "applied" else "red"
        console.print(f"[{colour}]{status:>11}[/] #{letter.seq} {letter.consumer} {letter.subject} {reason}")
    applied = sum(status == "applied" for _, (status, _) in results)
    console.print(f"{applied} of {len(results)} re-driven and applied.")
    raise typer.Exit(0 if applied == len(results) else 1)


async def _listing(consumer: str | None) -> list[deadletters.DeadLetter]:
    nc = await connect_nats("creditstream-cli")
    try:
        return await deadletters.listing(nc.jetstream(), consumer)
    finally:
        await nc.drain()


async def _redrive(consumer: str | None, wanted: set[int]) -> list[tuple[deadletters.DeadLetter, tuple[str, str]]]:
    nc = await connect_nats("creditstream-cli")
    try:
        letters = await deadletters.listing(nc.jetstream(), consumer)
        chosen = [letter for letter in letters if not wanted or letter.seq in wanted]
        return [(letter, await deadletters.redrive(nc, letter)) for letter in chosen]
    finally:
        await nc.drain()
