"""Versioned schema migrations: each service's numbered migrations (its `store.MIGRATIONS`) and the
tables every service keeps (outbox, inbox, access list, rate limits: `SHARED`), applied by
`creditstream migrate` in order, under one advisory lock per schema, each in a transaction of its own and
recorded in the schema's `schema_migrations`. A service only checks at start that its schema is not behind
its code (`require`): it refuses to start on an older database instead of changing it under the other
copies.

A migration never changes once released (its checksum is recorded, and `--status` says when the code's
differs); a change to a table is a new migration. Migration 1 of each is the DDL the services ran at start
before migrations existed: every statement in it may run on a database that already has those tables.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from shared.access import ACCESS_DDL, ORG_ACCESS_DDL
from shared.inbox import INBOX_DDL
from shared.limits import LIMITS_DDL
from shared.outbox import OUTBOX_DDL
from shared.settings import SERVICES


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]

    @property
    def checksum(self) -> str:
        return hashlib.sha256("\n;\n".join(self.statements).encode()).hexdigest()


# What every service's schema holds whatever the service: the component "shared" of schema_migrations.
SHARED: tuple[Migration, ...] = (
    Migration(1, "outbox, inbox, access list, rate limits", (*OUTBOX_DDL, *INBOX_DDL, *ACCESS_DDL, *LIMITS_DDL)),
    # Where each published event sits on its stream, so that erasing a user can delete their messages
    # (rows published before it have none: erasure looks for those on the stream).
    Migration(2, "the stream sequence of each published outbox event", (
        "ALTER TABLE outbox ADD COLUMN stream_seq BIGINT",
    )),
    Migration(3, "who may act for each organization", ORG_ACCESS_DDL),
)  # fmt: skip

# (component, its migrations): the shared tables first, then the service's own.
Plan = tuple[tuple[str, Sequence[Migration]], ...]

TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)"""


def plan(service: str) -> Plan:
    """The migrations of `service`'s schema (the media worker's is media's)."""
    schema = "media" if service == "media-worker" else service
    own: Sequence[Migration] = importlib.import_module(f"services.{schema}.store").MIGRATIONS
    return (("shared", SHARED), (schema, own))


def check(plan: Plan) -> None:
    """Versions are 1, 2, 3 ... in order: a gap or a repeat is a mistake in the code, found before any is run."""
    for component, migrations in plan:
        versions = [m.version for m in migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"{component}: migrations must be numbered 1, 2, 3 ... in order, not {versions}")


@dataclass(frozen=True)
class State:
    component: str
    migration: Migration
    applied_at: datetime | None  # None: pending
    changed: bool  # applied, and the code's statements differ from what was applied


class MigrationError(RuntimeError):
    """A migration failed (it was rolled back); the message names it."""


class SchemaBehindError(RuntimeError):
    """The database has not had every migration this code needs."""


async def _applied(conn: AsyncConnection) -> dict[tuple[str, int], dict[str, object]]:
    cursor = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cursor.fetchone()
    if not (row and row[0]):
        return {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT component, version, checksum, applied_at FROM schema_migrations")
        return {(r["component"], r["version"]): r for r in await cur.fetchall()}


async def _enter(conn: AsyncConnection, schema: str, role: str | None) -> bool:
    """Work in `schema` as `role` (its owner, so what a migration makes is the service's); False when the
    schema does not exist yet."""
    if role:
        await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    cursor = await conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (schema,))
    row = await cursor.fetchone()
    return bool(row and row[0])


async def status(database_url: str, schema: str, plan: Plan, role: str | None = None) -> list[State]:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        applied = await _applied(conn) if await _enter(conn, schema, role) else {}
    states = []
    for component, migrations in plan:
        for m in migrations:
            found = applied.get((component, m.version))
            at = found["applied_at"] if found else None
            assert at is None or isinstance(at, datetime)
            states.append(State(component, m, at, found is not None and found["checksum"] != m.checksum))
    return states


async def apply(database_url: str, schema: str, plan: Plan, role: str | None = None) -> list[tuple[str, Migration]]:
    """Apply what is pending, in order; what was applied now. A migration that fails is rolled back whole
    (PostgreSQL's DDL is transactional), stops the run and raises; those before it stay applied."""
    check(plan)
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        exists = await _enter(conn, schema, role)
        # Held for the whole run (not per transaction): a second `migrate` waits, then finds nothing to do.
        await conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"migrate:{schema}",))
        try:
            if not exists:  # a role of a service may not create schemas: they are provisioned (shared/db_roles.py)
                await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            await conn.execute(TABLE)
            applied = await _applied(conn)
            done: list[tuple[str, Migration]] = []
            for component, migrations in plan:
                for migration in migrations:
                    if (component, migration.version) in applied:
                        continue
                    try:
                        async with conn.transaction():
                            for statement in migration.statements:
                                await conn.execute(statement)  # static text of ours
                            await conn.execute(
                                "INSERT INTO schema_migrations (component, version, name, checksum)"
                                " VALUES (%s, %s, %s, %s)",
                                (component, migration.version, migration.name, migration.checksum),
                            )
                    except psycopg.Error as exc:
                        raise MigrationError(
                            f"{schema}: {component} migration {migration.version} ({migration.name}): {exc}"
                        ) from exc
                    done.append((component, migration))
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (f"migrate:{schema}",))


async def require(database_url: str, schema: str, plan: Plan) -> None:
    """Refuse to run on a schema behind this code. One ahead of it is fine: a release's migrations add
    before the code that needs them, so the copies of the previous release keep running during a rollout."""
    states = await status(database_url, schema, plan)
    if pending := [f"{s.component} {s.migration.version} ({s.migration.name})" for s in states if not s.applied_at]:
        raise SchemaBehindError(
            f"the {schema} schema is behind this code: migrations {', '.join(pending)} are not applied."
            " Run `creditstream migrate` (or `make up`, which runs it) first."
        )


async def _owner(database_url: str, schema: str) -> str | None:
    """The role that owns `schema` (its service's, where the schemas were provisioned, shared/db_roles.py)
    when this login may act as it and is not it; None: work as this login."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT (SELECT rolname FROM pg_roles WHERE oid = nspowner) FROM pg_namespace WHERE nspname = %s"
            " AND nspowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)"
            " AND pg_has_role(current_user, nspowner, 'SET')",
            (schema,),
        )
        row = await cursor.fetchone()
    return str(row[0]) if row else None


async def apply_all(database_url: str) -> list[tuple[str, str, Migration]]:
    """Every service's pending migrations, each schema as its owner (`creditstream migrate`,
    `creditstream up`, the test systems): (schema, component, migration) of each applied."""
    done = []
    for service in SERVICES:
        applied = await apply(database_url, service, plan(service), await _owner(database_url, service))
        done += [(service, component, migration) for component, migration in applied]
    return done


async def status_all(database_url: str) -> dict[str, list[State]]:
    return {
        service: await status(database_url, service, plan(service), await _owner(database_url, service))
        for service in SERVICES
    }
