"""A user's export (GDPR Art. 15 and 20): one JSON document with their profile, balance, transactions, lots,
media jobs (whose links open their records and files) and the whole credit history, the same as the ledger's;
only ever the token's own user."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from services.projections.schemas import Export
from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.convergence import assert_converged, ledger_view, welcomed
from tests.e2e.stripe_support import paid_pack
from tests.e2e.test_media_images import completed, image, upload


def export(system: System, token: str) -> httpx.Response:
    return httpx.get(f"{system.url('projections')}/api/user/export", headers=bearer(token), timeout=30)


def test_an_export_holds_everything_of_the_user_and_agrees_with_the_ledger(system: System) -> None:
    token, user_id = welcomed(system)
    tx_id, _ = paid_pack(system, token, admin_token(system), "basic")
    made = upload(system, token, image())
    assert completed(system, token, made.json()["id"])["status"] == "COMPLETED"
    spent = httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/debits",
        json={"amount": 4, "description": "exported"},
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert spent.status_code == 201, spent.text
    wait_until(lambda: ledger_view(system, token, user_id)["balance"] == 10 + 50 - 1 - 4, timeout=30,
               what="the purchase, the job's capture and the debit")  # fmt: skip
    expected = assert_converged(system, token, user_id)

    def exported() -> dict[str, Any]:
        answer = export(system, token)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["content-disposition"] == f'attachment; filename="creditstream-export-{user_id}.json"'
        Export.model_validate_json(answer.content)  # the document OpenAPI describes
        return dict(json.loads(answer.content))

    wait_until(lambda: any(j["status"] == "COMPLETED" for j in exported()["media_jobs"]), timeout=20,
               what="the job in the read models")  # fmt: skip
    document = exported()
    assert document["format"] == "creditstream-export/1"
    assert (document["user"]["id"], document["user"]["email"]) == (
        user_id,
        f"{document['user']['clerk_id']}@example.com",
    )
    assert document["account"]["balance"] == expected["balance"] == 55
    history = [(e["id"], e["type"], e["amount"], e["balance_after"]) for e in document["credit_history"]]
    assert history == [(e["id"], e["type"], e["amount"], e["balance_after"]) for e in expected["entries"]]
    assert [(t["id"], t["status"], t["amount"], t["credits"]) for t in document["transactions"]] == [
        (tx_id, "COMPLETED", 999, 50)
    ]
    assert sorted((lot["amount"], lot["remaining"]) for lot in document["lots"]) == [(10, 5), (50, 50)]
    [job] = document["media_jobs"]
    assert (job["operation"], job["status"], job["cost"]) == ("image_upload", "COMPLETED", 1)
    record = httpx.get(f"{system.url('media')}{job['links']['record']}", headers=bearer(token), timeout=30)
    assert record.status_code == 200 and record.json()["id"] == made.json()["id"]
    file = httpx.get(f"{system.url('media')}{job['links']['file']}", headers=bearer(token), timeout=30)
    assert file.status_code == 200 and file.headers["content-type"].startswith("image/")
    assert any(a["kind"] == "purchase" for a in document["activity"])

    other, other_id = welcomed(system)
    theirs = json.loads(export(system, other).content)
    assert theirs["user"]["id"] == other_id and theirs["transactions"] == theirs["media_jobs"] == []
    assert [e["amount"] for e in theirs["credit_history"]] == [10]
    refused = httpx.get(f"{system.url('projections')}/api/user/export", timeout=30)
    assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
