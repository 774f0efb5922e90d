"""The ledger's domain suite (tests/unit/test_ledger_domain.py) on PostgreSQL: every test of it runs
here again with a `ledger` on the real event store, in a schema of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from services.ledger import store
from services.ledger.application import Ledger
from tests.unit import test_ledger_domain as suite

# The same tests, collected here, where `ledger` is this module's fixture.
globals().update({name: test for name, test in vars(suite).items() if name.startswith("test_")})


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    app = Ledger(env={**store.eventsourcing_env(database_url), "POSTGRES_SCHEMA": schema})
    yield app
    app.close()
