"""`creditstream audit` on a system of its own: clean after a history of grants, debits and media holds
(exit 0), and after one projection row is tampered with it exits 1 naming that account and the first event
where the read model parts from the stream; each verdict is on the ledger's /metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.contracts.identity import org_account_id_for
from shared.db import schema_conninfo
from shared.testing.waiting import wait_until
from tests.conftest import System, system_of_its_own
from tests.e2e.auth_support import admin_token, bearer, new_clerk_id, new_org_id
from tests.e2e.convergence import assert_converged, ledger_view, welcomed
from tests.e2e.test_media_images import command, completed


@pytest.fixture(scope="module")
def audited(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system nobody else writes to: what audit finds is only this module's doing."""
    with system_of_its_own(database_url, tmp_path_factory.mktemp("audited")) as (running, _):
        yield running


def test_audit_is_clean_on_a_history_and_names_a_tampered_row(audited: System) -> None:
    system = audited
    first, first_id = welcomed(system)
    second, second_id = welcomed(system)
    for token, user_id, amount in ((first, first_id, 4), (second, second_id, 1)):
        answer = httpx.post(
            f"{system.url('ledger')}/api/accounts/{user_id}/debits", json={"amount": amount, "description": "audit"},
            headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())}, timeout=30,
        )  # fmt: skip
        assert answer.status_code == 201, answer.text
    made = command(system, second, "/api/images/generate", {"prompt": "ledger lines", "width": 32, "height": 32})
    assert completed(system, second, made.json()["id"])["status"] == "COMPLETED"
    wait_until(lambda: ledger_view(system, second, second_id)["balance"] == 6, timeout=20, what="the capture")
    for token, user_id in ((first, first_id), (second, second_id)):
        assert_converged(system, token, user_id)
    # An organization's account, spent by its member (a generation held and captured, a debit): audited as any.
    org_id = new_org_id()
    member = system.token(new_clerk_id(), org_id=org_id, org_role="org:admin", org_slug="audited")
    assert httpx.post(f"{system.url('identity')}/api/user/sync", headers=bearer(member), timeout=30).status_code == 200
    org_account = org_account_id_for(org_id)
    granted = httpx.post(
        f"{system.url('ledger')}/api/accounts/{org_account}/grants", json={"type": "BONUS", "amount": 9},
        headers={**bearer(admin_token(system)), "Idempotency-Key": "org-grant"}, timeout=30,
    )  # fmt: skip
    assert granted.status_code == 201, granted.text
    made = command(system, member, "/api/images/generate", {"prompt": "team lines", "width": 32, "height": 32})
    assert completed(system, member, made.json()["id"])["status"] == "COMPLETED"
    spent = httpx.post(f"{system.url('ledger')}/api/accounts/{org_account}/debits", json={"amount": 2},
                       headers={**bearer(member), "Idempotency-Key": "org-debit"}, timeout=30)  # fmt: skip
    assert spent.status_code == 201, spent.text
    wait_until(lambda: ledger_view(system, member, org_account)["balance"] == 4, timeout=20, what="the org's capture")

    def projected() -> int:
        answer = httpx.get(f"{system.url('projections')}/api/org/credits", headers=bearer(member), timeout=30)
        return int(answer.json()["balance"]) if answer.status_code == 200 else -1

    wait_until(lambda: projected() == 4, timeout=20, what="the org's balance projected")

    clean = system.cli("audit")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "agree" in clean.stdout and "4 accounts compared" in clean.stdout  # the member's own too
    assert audit_metrics(system)["creditstream_audit_discrepancies"] == 0

    entries = ledger_view(system, first, first_id)["entries"]  # newest first: the debit, then the bonus
    tampered = entries[-1]["id"]  # the welcome bonus
    with psycopg.connect(schema_conninfo(system.env["DATABASE_URL"], "projections"), autocommit=True) as conn:
        conn.execute("UPDATE credit_entries SET amount = amount + 1 WHERE event_id = %s", (tampered,))
    found = system.cli("audit")
    assert found.returncode == 1, found.stdout + found.stderr
    mismatches = [line for line in found.stdout.splitlines() if "MISMATCH" in line]
    assert len(mismatches) == 1, found.stdout
    assert first_id in mismatches[0] and "projections entries" in mismatches[0]
    assert f"first diverging event {tampered}" in mismatches[0]
    seen = audit_metrics(system)
    assert seen["creditstream_audit_discrepancies"] == 1, "the alert on a failing audit reads this"
    assert abs(time.time() - seen["creditstream_audit_last_run_timestamp_seconds"]) < 120


def audit_metrics(system: System) -> dict[str, float]:
    """The last audit's verdict as the ledger's /metrics shows it."""
    text = httpx.get(f"{system.url('ledger')}/metrics", timeout=30).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("creditstream_audit_")
    }


def test_adjust_goes_through_the_ledger_once_per_key_and_never_below_zero(audited: System) -> None:
    token, user_id = welcomed(audited)
    added = audited.cli("adjust", user_id, "5", "--reason", "goodwill")
    assert added.returncode == 0, added.stdout + added.stderr
    assert "by +5: balance 15" in added.stdout
    key = added.stdout.split("Idempotency-Key: ")[1].split()[0]
    again = audited.cli("adjust", user_id, "5", "--reason", "goodwill", "--key", key)
    assert again.returncode == 0 and "nothing changed now" in again.stdout, again.stdout
    taken = audited.cli("adjust", user_id, "-3", "--reason", "duplicate grant")
    assert taken.returncode == 0 and "by -3: balance 12" in taken.stdout, taken.stdout + taken.stderr
    refused = audited.cli("adjust", user_id, "-100", "--reason", "too much")
    assert refused.returncode == 1 and "Refused (402)" in refused.stdout, refused.stdout + refused.stderr
    view = assert_converged(audited, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [
        ("ADMIN_ADJUSTMENT", -3), ("ADMIN_ADJUSTMENT", 5), ("BONUS", 10),
    ]  # fmt: skip
