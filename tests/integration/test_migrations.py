"""Versioned migrations on a real PostgreSQL: what a fresh and a migrated database report, two runs at once
applying each migration once, a failing migration rolled back whole, services refusing a schema behind
their code (in process, and a real service process exiting with the message), and `creditstream migrate`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shared import migrations
from shared.migrations import Migration, MigrationError, Plan, SchemaBehindError
from shared.settings import SERVICES
from shared.testing.postgres import fresh_database
from shared.testing.servers import ServiceProcess, service_env
from shared.testing.waiting import free_port, wait_until

CLI = str(Path(sys.executable).with_name("creditstream"))

# Not idempotent on purpose: run twice, the CREATE fails and the INSERT doubles.
COUNTED = (
    Migration(1, "a table", ("CREATE TABLE runs (n INTEGER NOT NULL)",)),
    Migration(2, "a row", ("INSERT INTO runs VALUES (1)",)),
)


@pytest.fixture
def database(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        yield url


def rows(url: str, schema: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, options=f"-c search_path={schema}") as conn:
        return conn.execute(query).fetchall()


async def test_a_fresh_database_has_everything_pending_and_a_migrated_one_nothing(database: str) -> None:
    before = await migrations.status_all(database)
    assert set(before) == set(SERVICES)
    assert all(s.applied_at is None for states in before.values() for s in states)
    assert [(s.component, s.migration.version) for s in before["ledger"]] == [
        ("shared", 1),
        ("shared", 2),
        ("shared", 3),
        ("ledger", 1),
    ]

    applied = await migrations.apply_all(database)
    assert sorted((schema, component, m.version) for schema, component, m in applied) == sorted(
        (schema, component, m.version) for schema in SERVICES for component, ms in migrations.plan(schema) for m in ms
    )
    assert ("payments", "payments", 2) in [(schema, component, m.version) for schema, component, m in applied]
    after = await migrations.status_all(database)
    assert all(s.applied_at is not None and not s.changed for states in after.values() for s in states)
    assert await migrations.apply_all(database) == []  # a second run finds nothing to do
    for schema in SERVICES:
        await migrations.require(database, schema, migrations.plan(schema))
    # The tables migration 1 makes are there, owned by whoever ran it (here: the test's login, no roles).
    assert rows(database, "ledger", "SELECT count(*) FROM audit_runs") == [(0,)]
    assert rows(database, "media", "SELECT count(*) FROM jobs") == [(0,)]


async def test_two_runs_at_once_apply_each_migration_once(database: str) -> None:
    plan: Plan = (("counted", COUNTED),)
    first, second = await asyncio.gather(*(migrations.apply(database, "t_counted", plan) for _ in range(2)))
    assert sorted(len(done) for done in (first, second)) == [0, 2]  # one applied both, the other waited for it
    assert rows(database, "t_counted", "SELECT n FROM runs") == [(1,)]
    recorded = rows(database, "t_counted", "SELECT component, version FROM schema_migrations ORDER BY version")
    assert recorded == [("counted", 1), ("counted", 2)]


async def test_a_failing_migration_is_rolled_back_whole_and_those_before_it_stay(database: str) -> None:
    broken = Migration(3, "half of it would stay", ("CREATE TABLE half (n INTEGER)", "ALTER TABLE nowhere ADD x INT"))
    plan: Plan = (("counted", (*COUNTED, broken)),)
    with pytest.raises(MigrationError, match=r"t_broken: counted migration 3 \(half of it would stay\).*nowhere"):
        await migrations.apply(database, "t_broken", plan)
    states = await migrations.status(database, "t_broken", plan)
    assert [(s.migration.version, s.applied_at is not None) for s in states] == [(1, True), (2, True), (3, False)]
    assert rows(database, "t_broken", "SELECT to_regclass('half') IS NULL") == [(True,)]
    with pytest.raises(SchemaBehindError, match=r"counted 3 \(half of it would stay\)"):
        await migrations.require(database, "t_broken", plan)


async def test_a_schema_ahead_of_the_code_is_fine_and_one_behind_refused(database: str) -> None:
    await migrations.apply(database, "t_ahead", (("counted", COUNTED),))
    await migrations.require(database, "t_ahead", (("counted", COUNTED[:1]),))  # the previous release, mid-rollout
    with pytest.raises(SchemaBehindError, match="the t_behind schema is behind this code: migrations counted 1"):
        await migrations.require(database, "t_behind", (("counted", COUNTED),))


def test_numbering_mistakes_are_found_before_anything_runs() -> None:
    with pytest.raises(ValueError, match=r"numbered 1, 2, 3 ... in order, not \[1, 3\]"):
        migrations.check((("gap", (COUNTED[0], Migration(3, "x", ()))),))
    for service in SERVICES:
        migrations.check(migrations.plan(service))


def test_an_edited_released_migration_shows_in_the_status(database: str) -> None:
    asyncio.run(migrations.apply(database, "t_edited", (("counted", COUNTED),)))
    edited = Migration(2, "a row", ("INSERT INTO runs VALUES (2)",))
    states = asyncio.run(migrations.status(database, "t_edited", (("counted", (COUNTED[0], edited)),)))
    assert [s.changed for s in states] == [False, True]


# Every migration of every schema.
TOTAL = sum(len(ms) for schema in SERVICES for _, ms in migrations.plan(schema))


def cli(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database, "COLUMNS": "200"}
    return subprocess.run([CLI, "migrate", *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_cli_reports_applies_and_reports_again(database: str) -> None:
    fresh = cli(database, "--status")
    assert fresh.returncode == 1, fresh.stdout + fresh.stderr
    assert fresh.stdout.count("pending") == TOTAL + 1  # each row, and the summary line
    assert f"{TOTAL} pending: run `creditstream migrate`" in fresh.stdout

    applied = cli(database)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "ledger: applied ledger 1 (initial tables)" in applied.stdout
    assert f"{TOTAL} migrations applied" in applied.stdout

    done = cli(database, "--status")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pending" not in done.stdout and "Every schema is up to date." in done.stdout
    assert cli(database).stdout.strip() == "Every schema is up to date."


def test_a_service_on_a_database_behind_it_exits_saying_so(database: str, tmp_path: Path) -> None:
    # Every migration but identity's own: the service must not start, and must not apply it itself.
    asyncio.run(migrations.apply(database, "identity", (("shared", migrations.SHARED),)))
    # No NATS listens there: the schema is checked before anything else is reached.
    settings = {
        "DATABASE_URL": database,
        "DATA_DIR": str(tmp_path),
        "AUTH_MODE": "dev",
        "NATS_URL": "nats://127.0.0.1:1",
    }
    env = service_env(settings)
    service = ServiceProcess("identity", free_port(), env, echo=None).start()
    try:
        wait_until(lambda: service.exit_code() is not None, timeout=60, what="identity to exit")
    finally:
        service.stop()
    assert service.exit_code() != 0
    log = "\n".join(service.lines)
    assert "the identity schema is behind this code: migrations identity 1 (initial tables), identity 2" in log
    assert "Run `creditstream migrate`" in log
    assert rows(database, "identity", "SELECT to_regclass('users') IS NULL") == [(True,)]
