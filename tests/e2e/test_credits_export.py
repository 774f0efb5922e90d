"""A user's whole credit history as CSV: every entry the ledger has, newest first, and no cell a spreadsheet
would run as a formula."""

from __future__ import annotations

import csv
import io
import json
import uuid

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import bearer
from tests.e2e.convergence import ledger_view, projected_view, welcomed


def test_the_csv_export_holds_every_entry_of_the_ledger_and_defuses_formulas(system: System) -> None:
    token, user_id = welcomed(system)
    for amount, description in ((2, '=HYPERLINK("http://evil.example")'), (1, "plain, with a comma")):
        answer = httpx.post(f"{system.url('ledger')}/api/accounts/{user_id}/debits",
                            json={"amount": amount, "description": description},
                            headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())}, timeout=30)  # fmt: skip
        assert answer.status_code == 201, answer.text
    expected = ledger_view(system, token, user_id)
    wait_until(lambda: projected_view(system, token) == expected, timeout=30, what="projections = ledger")
    exported = httpx.get(f"{system.url('projections')}/api/user/credits/export?format=csv", headers=bearer(token),
                         timeout=30)  # fmt: skip
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["id"], r["type"], int(r["amount"]), int(r["balance_after"])) for r in rows] == [
        (e["id"], e["type"], e["amount"], e["balance_after"]) for e in expected["entries"]
    ]
    assert [r["description"] for r in rows] == ["plain, with a comma", "'=HYPERLINK(\"http://evil.example\")",
                                                "Welcome bonus"]  # fmt: skip
    assert all(json.loads(r["metadata"]) is not None for r in rows)
    assert httpx.get(f"{system.url('projections')}/api/user/credits/export?format=xlsx", headers=bearer(token),
                     timeout=30).status_code == 422  # fmt: skip
