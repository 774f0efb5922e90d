"""`creditstream migrate`: every service's pending schema migrations, in order (shared/migrations.py);
`--status` lists what each schema has and lacks."""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.table import Table

from creditstream import connect
from shared import migrations


def run(console: Console, status_only: bool, service: str | None) -> int:
    """0: every schema is at this code's migrations; 1: one failed (or, with --status, some are pending);
    2: no database. `service`: only its schema, as DATABASE_URL's login (a deployment's Job runs one per
    service, each with that service's own login)."""
    database_url = connect.database_url()
    if database_url is None:
        console.print("[red]No database:[/] set DATABASE_URL, or DATA_DIR to where `up` keeps its PostgreSQL.")
        return 2
    if status_only:
        return show(console, asyncio.run(_status(database_url, service)))
    try:
        applied = asyncio.run(_apply(database_url, service))
    except migrations.MigrationError as exc:
        console.print(f"[red]Migration failed[/] (rolled back; those before it stay applied): {exc}")
        return 1
    for schema, component, migration in applied:
        console.print(f"{schema}: applied {component} {migration.version} ({migration.name})")
    console.print(f"{len(applied)} migrations applied" if applied else "Every schema is up to date.")
    return 0


def show(console: Console, states: dict[str, list[migrations.State]]) -> int:
    table = Table("schema", "component", "version", "name", "applied")
    for schema, found in states.items():
        for state in found:
            applied = state.applied_at.isoformat(timespec="seconds") if state.applied_at else "[yellow]pending[/]"
            if state.changed:
                applied += " [red](changed since: a released migration must not be edited)[/]"
            table.add_row(schema, state.component, str(state.migration.version), state.migration.name, applied)
    console.print(table)
    pending = sum(1 for found in states.values() for s in found if s.applied_at is None)
    console.print(f"{pending} pending: run `creditstream migrate`" if pending else "Every schema is up to date.")
    return 1 if pending else 0


async def _status(database_url: str, service: str | None) -> dict[str, list[migrations.State]]:
    if service is None:
        return await migrations.status_all(database_url)
    return {service: await migrations.status(database_url, service, migrations.plan(service))}


async def _apply(database_url: str, service: str | None) -> list[tuple[str, str, migrations.Migration]]:
    if service is None:
        return await migrations.apply_all(database_url)
    applied = await migrations.apply(database_url, service, migrations.plan(service))
    return [(service, component, migration) for component, migration in applied]
