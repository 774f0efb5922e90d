"""One PostgreSQL role per service, owning its own schemas and nothing else.

A service connects as `creditstream_<service>`: it owns its schema (its tables, made by its own
migrations at start) and has no right on any other, so media cannot read or write `ledger.*`, and no
service can rewrite the ledger's event store but the ledger. The roles are not superusers, cannot make
roles or databases, and cannot create schemas: what a schema holds is its owner's business, which schemas
exist is the operator's (`creditstream up`, the test fixtures, `deploy/postgres-init.sql`, all from the
statements below, as a role that may create roles).

Where one machine runs everything, the roles' passwords are made once and kept in an owner-only file
(`creditstream up`: DATA_DIR/postgres-roles.json). The embedded PostgreSQL trusts its Unix socket, whose
directory only this machine's user can reach, so there the roles separate what each service may do, and
the passwords matter once DATABASE_URL names a server that checks them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from psycopg import Connection, sql
from psycopg.conninfo import make_conninfo

from shared.secret_files import create_private, read_private

# Each service's schemas: projections rebuilds its read models beside the live ones (services/projections/replay.py).
SCHEMAS: dict[str, tuple[str, ...]] = {
    "identity": ("identity",),
    "ledger": ("ledger",),
    "payments": ("payments",),
    "media": ("media",),
    "projections": ("projections", "projections_next"),
}
# Processes that run as another's role: the media worker is media, on media's schema.
ROLE_OF = {"media-worker": "media"}
FILE = "postgres-roles.json"


def role(service: str) -> str:
    return f"creditstream_{ROLE_OF.get(service, service)}"


def statements(password: Callable[[str], sql.Composable]) -> list[sql.Composed]:
    """What makes the roles and hands each its schemas (again and again: every statement may run twice)."""
    roles = sql.SQL(", ").join(
        sql.SQL("({}, ARRAY[{}])").format(
            sql.Literal(role(service)), sql.SQL(", ").join(sql.Literal(schema) for schema in schemas)
        )
        for service, schemas in SCHEMAS.items()
    )
    handed = sql.SQL(
        # Attributes are checked, not set: only a superuser may even name SUPERUSER or BYPASSRLS, and a new
        # role has none of them; one made earlier by hand with more is refused rather than used. Whoever
        # provisions becomes a member, since handing a role its schemas takes SET on it (since PostgreSQL 16 a
        # role that made another may otherwise only administer it). Tables made before the roles were (a data
        # directory of an older version) change hands too; a table takes its serial columns' sequences along.
        """DO $$ DECLARE r record; s text; t record; BEGIN
FOR r IN SELECT * FROM (VALUES {roles}) AS v(name, schemas) LOOP
  BEGIN EXECUTE format('CREATE ROLE %I LOGIN', r.name); EXCEPTION WHEN duplicate_object THEN NULL; END;
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = r.name AND (rolsuper OR rolcreaterole OR rolcreatedb
             OR rolreplication OR rolbypassrls)) THEN
    RAISE EXCEPTION 'role % may do more than its service needs: ALTER ROLE it to NOSUPERUSER NOCREATEROLE'
      ' NOCREATEDB NOREPLICATION NOBYPASSRLS', r.name;
  END IF;
  EXECUTE format('GRANT %I TO CURRENT_USER', r.name);
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), r.name);
  FOREACH s IN ARRAY r.schemas LOOP
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', s, r.name);
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', s, r.name);
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', s);
    FOR t IN SELECT c.oid::regclass AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relowner <> r.name::regrole LOOP
      EXECUTE format('ALTER TABLE %s OWNER TO %I', t.name, r.name);
    END LOOP;
  END LOOP;
END LOOP;
END $$"""
    ).format(roles=roles)
    passwords = [
        sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role(service)), password(service))
        for service in SCHEMAS
    ]
    return [handed, *passwords]


def provision(admin_url: str, passwords: Mapping[str, str]) -> None:
    """Make the roles in the database of `admin_url` (a role that may create roles) and give them their
    schemas. Safe to run at every start."""
    with Connection.connect(admin_url, autocommit=True) as conn:
        # Roles are the cluster's, not the database's: two starts at once must not both create one.
        conn.execute("SELECT pg_advisory_lock(hashtext('creditstream:roles'))")
        try:
            for statement in statements(lambda service: sql.Literal(passwords[service])):
                conn.execute(statement)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('creditstream:roles'))")


def service_url(admin_url: str, service: str, password: str) -> str:
    """`admin_url` with `service`'s role and password in place of the administrator's."""
    return make_conninfo(admin_url, user=role(service), password=password)


def load_or_create_passwords(path: Path) -> dict[str, str]:
    """The roles' passwords kept at `path` (mode 0600), made there on first use."""
    text = read_private(path)
    if text is None:
        text = create_private(path, json.dumps({service: secrets.token_urlsafe(24) for service in SCHEMAS}))
    kept: dict[str, str] = json.loads(text)
    return {service: kept[service] for service in SCHEMAS}


def service_urls(admin_url: str, passwords_file: Path) -> dict[str, str]:
    """Provision the roles, then each process's DATABASE_URL by process name (the media worker's too)."""
    passwords = load_or_create_passwords(passwords_file)
    provision(admin_url, passwords)
    processes = [*SCHEMAS, *ROLE_OF]
    return {p: service_url(admin_url, p, passwords[ROLE_OF.get(p, p)]) for p in processes}
