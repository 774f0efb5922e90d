"""An upgrade with a migration that changes a table holding money: a database as the previous release left
it (payments at migration 1: refunds recorded only in each transaction's metadata) with users, purchases, a
refund, lots, an open hold and media jobs in it; the new release's payments refuses to start on it; `creditstream
migrate` applies payments 2 (refund columns, backfilled, under a constraint); then every service starts,
every answer a user or admin had is the same, the backfill is right, the constraint holds, and the audit is
clean.

The previous release's database is made by running this release and taking migration 2 back out (its exact
inverse: the two columns and their constraint dropped, its row deleted), as the previous release never wrote
those columns: what remains is what it would have left."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from shared.db import schema_conninfo
from shared.testing.waiting import wait_until
from tests.conftest import System, system_of_its_own
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.convergence import assert_converged, ledger_view, welcomed
from tests.e2e.stripe_support import paid_pack, transaction
from tests.e2e.test_media_images import completed, image, upload
from tests.e2e.test_payment_commands import my_transactions, refund


@pytest.fixture(scope="module")
def upgraded(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_of_its_own(database_url, tmp_path_factory.mktemp("upgraded")) as (running, _):
        yield running


def get(system: System, service: str, path: str, token: str) -> Any:
    response = httpx.get(f"{system.url(service)}{path}", headers=bearer(token), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def payments_sql(system: System, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(schema_conninfo(system.env["DATABASE_URL"], "payments"), autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def test_an_upgrade_that_changes_the_transactions_table_loses_nothing(upgraded: System) -> None:
    system = upgraded
    admin = admin_token(system)
    users = [welcomed(system) for _ in range(2)]
    (first, first_id), (second, _) = users
    refunded_tx, _ = paid_pack(system, first, admin, "basic")  # $9.99 for 50
    kept_tx, _ = paid_pack(system, second, admin, "pro")
    partial = refund(system, admin, refunded_tx, str(uuid.uuid4()), amount_cents=300)
    assert partial.status_code == 200, partial.text
    claw = partial.json()["metadata"]["refund"]["credits"]
    assert claw == 16  # ceil(50 * 300 / 999)
    made = upload(system, first, image())
    assert completed(system, first, made.json()["id"])["status"] == "COMPLETED"
    held = httpx.post(
        f"{system.url('ledger')}/api/accounts/{first_id}/reservations",
        json={"amount": 2},
        headers={**bearer(first), "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert held.status_code == 201, held.text
    # 10 welcome + 50 bought - 16 clawed back - 1 for the upload
    wait_until(lambda: ledger_view(system, first, first_id)["balance"] == 43, timeout=30, what="the claw-back")
    for token, user_id in users:
        assert_converged(system, token, user_id)

    def answers() -> list[Any]:
        """Everything a user or an admin reads of what is at stake."""
        seen: list[Any] = [transaction(system, admin, refunded_tx), transaction(system, admin, kept_tx)]
        for token, user_id in users:
            seen += [
                ledger_view(system, token, user_id),
                get(system, "ledger", f"/api/accounts/{user_id}", token),
                my_transactions(system, token),
                get(system, "payments", "/api/user/transactions/stats", token),
                get(system, "media", "/api/images", token),
                get(system, "projections", "/api/user/credits", token),
            ]
        return seen

    before = answers()
    assert before[0]["status"] == "REFUNDED" and before[5]["total_spent"] == 999 - 300
    for process in system.services.values():
        process.stop()
    payments_sql(system, "ALTER TABLE transactions DROP CONSTRAINT transactions_refund_within_payment,"
                 " DROP COLUMN refunded_cents, DROP COLUMN credits_clawed_back")  # fmt: skip
    payments_sql(system, "DELETE FROM schema_migrations WHERE component = 'payments' AND version = 2")

    payments = system.services["payments"]
    payments.start()
    wait_until(lambda: payments.exit_code() is not None, timeout=60, what="payments to refuse the old schema")
    assert "the payments schema is behind this code: migrations payments 2" in "\n".join(payments.lines)
    status = system.cli("migrate", "--status")
    assert status.returncode == 1 and "1 pending" in status.stdout, status.stdout + status.stderr

    migrated = system.cli("migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "payments: applied payments 2" in migrated.stdout and "1 migrations applied" in migrated.stdout
    for process in system.services.values():
        process.restart()
    for process in system.services.values():
        process.wait_ready()

    assert answers() == before
    backfilled = payments_sql(
        system, "SELECT id::text, refunded_cents, credits_clawed_back FROM transactions ORDER BY refunded_cents"
    )
    assert sorted(backfilled) == sorted([(kept_tx, 0, 0), (refunded_tx, 300, claw)])
    # Migrated as the service's own role: the table stays payments' (its role may alter it, no other may).
    owner = "SELECT tableowner FROM pg_tables WHERE schemaname = 'payments' AND tablename = 'transactions'"
    assert payments_sql(system, owner) == [("creditstream_payments",)]
    with pytest.raises(psycopg.errors.CheckViolation):
        payments_sql(system, "UPDATE transactions SET refunded_cents = amount_cents + 1 WHERE id = %s", (kept_tx,))
    # The new release writes the columns itself.
    full = refund(system, admin, kept_tx, str(uuid.uuid4()))
    assert full.status_code == 200, full.text
    assert payments_sql(system, "SELECT refunded_cents FROM transactions WHERE id = %s", (kept_tx,)) == [(2499,)]
    for token, user_id in users:
        assert_converged(system, token, user_id)
    audit = system.cli("audit")
    assert audit.returncode == 0 and "agree" in audit.stdout, audit.stdout + audit.stderr
