"""Each service's PostgreSQL role (shared/db_roles.py) can use its own schema and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg.errors
import pytest
from psycopg import Connection
from psycopg.conninfo import make_conninfo

from shared import db_roles
from shared.testing.postgres import EmbeddedPostgres, fresh_database


@pytest.fixture(scope="module")
def provisioned(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A database of its own with the roles made and a ledger table in the ledger's schema."""
    with fresh_database(database_url) as admin:
        urls = db_roles.service_urls(admin, tmp_path_factory.mktemp("roles") / db_roles.FILE)
        with Connection.connect(urls["ledger"], autocommit=True) as ledger:
            ledger.execute("CREATE TABLE ledger.ledger_events (id int PRIMARY KEY, state bytea)")
            ledger.execute("INSERT INTO ledger.ledger_events VALUES (1, 'ten credits')")
        yield admin, urls


def refused(url: str, statement: str) -> bool:
    with Connection.connect(url, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return True
    return False


def test_media_cannot_read_or_write_the_ledgers_event_store(provisioned: tuple[str, dict[str, str]]) -> None:
    _, urls = provisioned
    media = urls["media"]
    assert refused(media, "SELECT * FROM ledger.ledger_events")
    assert refused(media, "INSERT INTO ledger.ledger_events VALUES (2, 'a million credits')")
    assert refused(media, "CREATE TABLE ledger.forged (id int)")
    assert refused(urls["media-worker"], "SELECT * FROM ledger.ledger_events")  # the worker is media too


def test_no_service_reads_another_services_schema(provisioned: tuple[str, dict[str, str]]) -> None:
    _, urls = provisioned
    for service, schemas in db_roles.SCHEMAS.items():  # as its migrations make its tables: as its owner
        with Connection.connect(urls[service], autocommit=True) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {schemas[0]}.probe (id int)")
    for service in db_roles.SCHEMAS:
        assert not refused(urls[service], f"SELECT * FROM {db_roles.SCHEMAS[service][0]}.probe"), service
        for other, schemas in db_roles.SCHEMAS.items():
            if other != service:
                assert refused(urls[service], f"SELECT * FROM {schemas[0]}.probe"), (service, other)


def test_a_service_owns_its_schema_and_may_make_no_other(provisioned: tuple[str, dict[str, str]]) -> None:
    _, urls = provisioned
    with Connection.connect(urls["payments"], autocommit=True) as conn:
        conn.execute("CREATE TABLE payments.own (id int)")
        conn.execute("INSERT INTO payments.own VALUES (1)")
        assert conn.execute("SELECT count(*) FROM payments.own").fetchone() == (1,)
    assert refused(urls["payments"], "CREATE SCHEMA payments_shadow")
    assert refused(urls["payments"], "CREATE ROLE sneaky")
    assert refused(urls["projections"], "CREATE TABLE public.shadow (id int)")


def test_provisioning_again_keeps_what_the_schemas_hold(
    provisioned: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    admin, _ = provisioned
    with Connection.connect(admin, autocommit=True) as conn:
        # A table the administrator made (a data directory from before the roles): handed to its schema's owner.
        conn.execute("CREATE TABLE media.legacy (id int)")
    passwords = db_roles.load_or_create_passwords(tmp_path / db_roles.FILE)
    db_roles.provision(admin, passwords)
    with Connection.connect(db_roles.service_url(admin, "media", passwords["media"]), autocommit=True) as media:
        media.execute("INSERT INTO media.legacy VALUES (1)")
    with Connection.connect(db_roles.service_url(admin, "ledger", passwords["ledger"])) as ledger:
        assert ledger.execute("SELECT state FROM ledger.ledger_events").fetchall() == [(b"ten credits",)]


def test_a_managed_postgres_administrator_without_superuser_can_provision(tmp_path: Path) -> None:
    """What a managed PostgreSQL gives: a database owner with CREATEROLE, no superuser (a cluster of its own:
    since PostgreSQL 16 such a role may manage only the roles it made itself)."""
    server = EmbeddedPostgres(tmp_path / "pg")
    try:
        with Connection.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE ROLE cloud_admin LOGIN CREATEROLE")
            conn.execute("CREATE DATABASE app OWNER cloud_admin")
        admin = make_conninfo(server.url, user="cloud_admin", dbname="app")
        urls = db_roles.service_urls(admin, tmp_path / db_roles.FILE)
        db_roles.service_urls(admin, tmp_path / db_roles.FILE)  # and again, as every start does
        with Connection.connect(urls["ledger"], autocommit=True) as ledger:
            ledger.execute("CREATE TABLE ledger.ledger_events (id int)")
        assert refused(urls["media"], "SELECT * FROM ledger.ledger_events")
        with Connection.connect(admin) as conn:
            owners = conn.execute(
                "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname LIKE %s", ("%i%",)
            ).fetchall()
        assert ("identity", "creditstream_identity") in owners and ("media", "creditstream_media") in owners
    finally:
        server.stop()
