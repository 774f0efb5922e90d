"""Promo codes: an admin makes one, users redeem it for a BONUS lot, once each and never past its maximum
however many redeem at once; what cannot be redeemed is one 404 that tells nothing of which codes exist."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.contracts.identity import org_account_id_for
from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer, new_clerk_id, new_org_id
from tests.e2e.convergence import ledger_view, welcomed


def make_code(system: System, **fields: Any) -> dict[str, Any]:
    code = fields.pop("code", f"promo{uuid.uuid4().hex[:8]}")
    body = {"code": code, "credits": 15, "max_redemptions": 10, **fields}
    made = httpx.post(f"{system.url('payments')}/api/admin/promo-codes", json=body, headers=bearer(admin_token(system)),
                      timeout=30)  # fmt: skip
    assert made.status_code == 201, made.text
    return dict(made.json())


def redeem(system: System, token: str, code: str, key: str | None = None) -> httpx.Response:
    headers = {**bearer(token), "Idempotency-Key": key or str(uuid.uuid4())}
    return httpx.post(f"{system.url('payments')}/api/user/promo-codes/redeem", json={"code": code}, headers=headers,
                      timeout=30)  # fmt: skip


def promo_lots(system: System, token: str, user_id: str, code: str) -> list[dict[str, Any]]:
    return [e for e in ledger_view(system, token, user_id)["entries"]
            if e["type"] == "BONUS" and e["metadata"].get("promo_code") == code]  # fmt: skip


def test_thirty_redeem_a_code_of_ten_at_once_and_exactly_ten_get_its_credits(system: System) -> None:
    code = make_code(system, max_redemptions=10)["code"]
    users = [welcomed(system) for _ in range(30)]
    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(lambda user: redeem(system, user[0], code.lower()), users))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 10 + [404] * 20, statuses
    assert {a.json()["detail"] for a in answers if a.status_code == 404} == {"Unknown or no longer valid promo code."}
    winners = [user for user, answer in zip(users, answers, strict=True) if answer.status_code == 201]
    for token, user_id in winners:

        def granted(t: str = token, u: str = user_id) -> bool:
            return len(promo_lots(system, t, u, code)) == 1

        wait_until(granted, timeout=30, what="the promo's BONUS lot")
        [lot] = promo_lots(system, token, user_id, code)
        assert (lot["amount"], lot["description"]) == (15, f"Promo code {code}")
    losers = [user for user, answer in zip(users, answers, strict=True) if answer.status_code != 201]
    assert all(promo_lots(system, token, user_id, code) == [] for token, user_id in losers)
    listed = httpx.get(f"{system.url('payments')}/api/admin/promo-codes", headers=bearer(admin_token(system)),
                       timeout=30).json()  # fmt: skip
    assert next(p for p in listed if p["code"] == code)["redeemed"] == 10


def test_once_per_account_whatever_the_key_and_a_retried_key_answers_the_same(system: System) -> None:
    promo = make_code(system, credits=7, credits_expire_in_days=30)
    token, user_id = welcomed(system)
    first = redeem(system, token, promo["code"], key="promo-key-1")
    assert first.status_code == 201, first.text
    expires = datetime.fromisoformat(first.json()["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    again = redeem(system, token, promo["code"], key="promo-key-1")
    assert (again.status_code, again.json()) == (201, first.json())
    other_key = redeem(system, token, promo["code"].lower(), key="promo-key-2")
    assert other_key.status_code == 409 and promo["code"] in other_key.json()["detail"]
    wait_until(lambda: ledger_view(system, token, user_id)["balance"] == 17, timeout=30, what="10 + 7")
    [lot] = promo_lots(system, token, user_id, promo["code"])
    assert lot["amount"] == 7


def test_unknown_disabled_and_expired_codes_are_one_404_and_admins_alone_make_codes(system: System) -> None:
    token, user_id = welcomed(system)
    disabled = make_code(system)["code"]
    off = httpx.post(f"{system.url('payments')}/api/admin/promo-codes/{disabled}/disable",
                     headers=bearer(admin_token(system)), timeout=30)  # fmt: skip
    assert off.status_code == 200 and off.json()["disabled_at"] is not None
    until = datetime.now(UTC) + timedelta(seconds=1)
    expired = make_code(system, valid_until=until.isoformat())["code"]
    wait_until(lambda: datetime.now(UTC) > until + timedelta(milliseconds=100), timeout=10, what="the code's end")
    answers = [redeem(system, token, code) for code in (disabled, expired, "NOSUCHCODE")]
    assert [(a.status_code, a.json()["detail"]) for a in answers] == [
        (404, "Unknown or no longer valid promo code.")
    ] * 3
    assert ledger_view(system, token, user_id)["balance"] == 10
    made = httpx.post(f"{system.url('payments')}/api/admin/promo-codes", headers=bearer(token), timeout=30,
                      json={"code": "MINE", "credits": 1000, "max_redemptions": 1})  # fmt: skip
    assert made.status_code == 403
    new_users = make_code(system, new_users_only=True)["code"]
    assert redeem(system, token, new_users).status_code == 201  # paid for nothing yet


def test_redeeming_is_rate_limited_like_other_writes(system: System) -> None:
    token, _ = welcomed(system)
    answers = [redeem(system, token, f"GUESS{i:04d}").status_code for i in range(12)]
    assert answers[:10] == [404] * 10 and 429 in answers[10:], answers


def test_an_organizations_admin_redeems_a_code_for_its_account(system: System) -> None:
    org_id, clerk_id = new_org_id(), new_clerk_id()
    admin = system.token(clerk_id, org_id=org_id, org_role="org:admin", org_slug="promoted")
    assert httpx.post(f"{system.url('identity')}/api/user/sync", headers=bearer(admin), timeout=30).status_code == 200
    code = make_code(system, credits=12)["code"]
    member = system.token(new_clerk_id(), org_id=org_id)
    assert redeem(system, member, code).status_code == 403  # its admins redeem for it
    assert redeem(system, admin, code).status_code == 201
    account = org_account_id_for(org_id)
    wait_until(lambda: ledger_view(system, admin, account)["balance"] == 12, timeout=30, what="the org's promo lot")
    assert redeem(system, system.token(clerk_id), code).status_code == 201  # their own account is another
