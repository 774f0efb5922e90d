"""Erasure (GDPR Art. 17): after Clerk's user.deleted, within 60 s no table of identity, projections or media
and no message of the IDENTITY stream holds the person's email or names (searched by value), their media
files are gone, their tokens are refused, while the ledger keeps their credits under the pseudonymous id and
the audit stays clean; another user's export is unchanged; erasing again (the CLI) changes nothing and a
forgotten user is never reactivated."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from nats.js.errors import NotFoundError
from psycopg import sql

from shared.auth import user_id_for
from shared.testing.waiting import wait_until
from tests.conftest import System, system_of_its_own
from tests.e2e.auth_support import admin_token, bearer, clerk_delivery, clerk_user, new_clerk_id
from tests.e2e.convergence import assert_converged, ledger_view, welcomed
from tests.e2e.test_media_images import completed, image, upload

SCHEMAS = ("identity", "projections", "media")


@pytest.fixture(scope="module")
def forgetting(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_of_its_own(database_url, tmp_path_factory.mktemp("erasure")) as (running, _):
        yield running


def deliver(system: System, kind: str, data: dict[str, Any]) -> None:
    body, headers = clerk_delivery(system.env["CLERK_WEBHOOK_SECRET"], kind, data)
    answer = httpx.post(f"{system.url('identity')}/webhooks/clerk", content=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text


def rows_holding(system: System, values: list[str]) -> list[str]:
    """Every table row of identity, projections and media whose text holds one of `values`."""
    found = []
    with psycopg.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY(%s)", (list(SCHEMAS),)
        ).fetchall()
        for schema, table in tables:
            # A row as text; the outbox keeps its payloads as bytes, searched as text too.
            text = "t::text || convert_from(t.payload, 'UTF8')" if table == "outbox" else "t::text"
            query = sql.SQL("SELECT count(*) FROM {} AS t WHERE {} ILIKE %s").format(
                sql.Identifier(schema, table), sql.SQL(text)
            )
            for value in values:
                row = conn.execute(query, (f"%{value}%",)).fetchone()
                if row and row[0]:
                    found.append(f"{schema}.{table} ({value}: {row[0]})")
    return found


def stream_messages_holding(system: System, values: list[str]) -> list[int]:
    async def read() -> list[int]:
        nc = await system.connect("ops")
        try:
            js = nc.jetstream()
            info = await js.stream_info("IDENTITY")
            found = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg("IDENTITY", seq)
                except NotFoundError:  # deleted
                    continue
                if any(v.lower().encode() in (msg.data or b"").lower() for v in values):
                    found.append(seq)
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


def export(system: System, token: str) -> dict[str, Any]:
    answer = httpx.get(f"{system.url('projections')}/api/user/export", headers=bearer(token), timeout=30)
    assert answer.status_code == 200, answer.text
    document = dict(json.loads(answer.content))
    document.pop("exported_at")
    return document


def test_a_deleted_user_is_forgotten_everywhere_but_in_the_money(forgetting: System) -> None:
    system = forgetting
    clerk_id, marker = new_clerk_id(), uuid.uuid4().hex[:10]
    email, first, last = f"ada.{marker}@example.com", f"Ada{marker}", f"Lovelace{marker}"
    deliver(system, "user.created", clerk_user(clerk_id, email, first_name=first, last_name=last))
    deliver(system, "user.updated", clerk_user(clerk_id, email, first_name=first, last_name=f"{last}-King"))
    user_id = user_id_for(clerk_id)
    token = system.token(clerk_id, email=email)
    credits = f"{system.url('projections')}/api/user/credits"
    wait_until(lambda: httpx.get(credits, headers=bearer(token), timeout=30).json().get("balance") == 10,
               timeout=20, what="the welcome bonus")  # fmt: skip
    made = upload(system, token, image(), title=f"portrait of {first}")
    assert completed(system, token, made.json()["id"])["status"] == "COMPLETED"
    wait_until(lambda: ledger_view(system, token, user_id)["balance"] == 9, timeout=30, what="the job's capture")
    assert_converged(system, token, user_id)
    other, _ = welcomed(system)
    mine = f"{system.url('projections')}/api/user/export"
    wait_until(lambda: httpx.get(mine, headers=bearer(other), timeout=30).status_code == 200, timeout=20,
               what="the other user's profile in projections")  # fmt: skip
    others_before = export(system, other)
    pii = [email, first, last]
    wait_until(lambda: bool(stream_messages_holding(system, pii)), timeout=20, what="the profile on the stream")
    assert rows_holding(system, pii) != []  # the search finds them while they are there
    files = Path(system.env["DATA_DIR"]) / "media" / user_id
    assert files.is_dir() and any(files.rglob("*"))

    deliver(system, "user.deleted", {"id": clerk_id, "object": "user", "deleted": True})
    wait_until(lambda: rows_holding(system, pii) == [] and stream_messages_holding(system, pii) == []
               and not files.exists(), timeout=60, what="the person forgotten everywhere")  # fmt: skip

    admin = admin_token(system)
    stored = httpx.get(f"{system.url('identity')}/api/admin/users/{user_id}", headers=bearer(admin), timeout=30).json()
    assert (stored["email"], stored["first_name"], stored["is_active"]) == ("", None, False)
    assert stored["erased_at"] is not None
    wait_until(lambda: httpx.get(f"{system.url('media')}/api/images", headers=bearer(token), timeout=30).status_code
               == 403, timeout=20, what="the erased user's token refused")  # fmt: skip
    # The money stays: the ledger's account under the pseudonymous id, as it was.
    account = httpx.get(f"{system.url('ledger')}/api/accounts/{user_id}", headers=bearer(admin), timeout=30).json()
    assert account["balance"] == 9
    audit = system.cli("audit")
    assert audit.returncode == 0 and "agree" in audit.stdout, audit.stdout + audit.stderr
    assert export(system, other) == others_before

    again = system.cli("erase", user_id)
    assert again.returncode == 0 and f"Erased user {user_id}" in again.stdout, again.stdout + again.stderr
    reactivated = httpx.post(
        f"{system.url('identity')}/api/admin/users/{user_id}/reactivate", headers=bearer(admin), timeout=30
    )
    assert reactivated.status_code == 409 and "was erased" in reactivated.json()["detail"]
    # A late profile event from Clerk writes nothing back.
    deliver(system, "user.updated", clerk_user(clerk_id, email, first_name=first, last_name=last))
    assert rows_holding(system, pii) == []
    unknown = system.cli("erase", str(uuid.uuid4()))
    assert unknown.returncode == 1 and "404" in unknown.stdout
