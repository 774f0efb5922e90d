"""An organization's shared wallet: members' credit-costing requests spend it within their monthly limits,
and a refusal says whose credit (or which limit) it was."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from shared.auth import user_id_for
from shared.contracts.identity import org_account_id_for
from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import (
    admin_token,
    bearer,
    clerk_delivery,
    clerk_membership,
    clerk_org,
    new_clerk_id,
    new_org_id,
)
from tests.e2e.stripe_support import card_at_stripe, checkout, pay, payment_intent_of, settled


def post(system: System, service: str, path: str, token: str, body: dict[str, Any]) -> httpx.Response:
    headers = {**bearer(token), "Idempotency-Key": str(uuid.uuid4())}
    return httpx.post(f"{system.url(service)}{path}", json=body, headers=headers, timeout=30)


def account(system: System, token: str, account_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{system.url('ledger')}/api/accounts/{account_id}", headers=bearer(token), timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def set_limit(system: System, admin: str, clerk_id: str, limit: int | None) -> httpx.Response:
    headers = {**bearer(admin), "Idempotency-Key": str(uuid.uuid4())}
    url = f"{system.url('ledger')}/api/org/members/{clerk_id}/limit"
    return httpx.put(url, json={"monthly_credits": limit}, headers=headers, timeout=30)


class Org:
    """An organization with an admin and members, each signed in with a token active in it."""

    def __init__(self, system: System, credits: int, members: int) -> None:
        self.system, self.id = system, new_org_id()
        self.account_id = org_account_id_for(self.id)
        self.clerk_ids = [new_clerk_id() for _ in range(members + 1)]
        roles = ["org:admin", *["org:member"] * members]
        self.tokens = [
            system.token(c, org_id=self.id, org_role=r, org_slug="team")
            for c, r in zip(self.clerk_ids, roles, strict=True)
        ]
        for token in self.tokens:
            assert (
                httpx.post(f"{system.url('identity')}/api/user/sync", headers=bearer(token), timeout=30).status_code
                == 200
            )
        granted = post(system, "ledger", f"/api/accounts/{self.account_id}/grants", admin_token(system),
                       {"type": "PURCHASE", "amount": credits, "description": "for the team"})  # fmt: skip
        assert granted.status_code == 201, granted.text

    @property
    def admin(self) -> str:
        return self.tokens[0]

    def balance(self) -> int:
        return int(account(self.system, self.admin, self.account_id)["balance"])


def generate(system: System, token: str) -> httpx.Response:
    return post(system, "media", "/api/images/generate", token, {"prompt": "a team photo", "width": 64, "height": 64})


def test_members_spend_the_shared_wallet_within_their_limits(system: System) -> None:
    org = Org(system, credits=20, members=2)
    a, b = org.tokens[1], org.tokens[2]
    limited = set_limit(system, org.admin, org.clerk_ids[1], 5)
    assert limited.status_code == 200, limited.text
    assert limited.json() == {
        "org_id": org.id, "account_id": org.account_id, "member_id": user_id_for(org.clerk_ids[1]),
        "clerk_user_id": org.clerk_ids[1], "monthly_credits": 5, "used": 0,
    }  # fmt: skip
    assert set_limit(system, a, org.clerk_ids[2], 1).status_code == 403  # a member sets no limits

    first = generate(system, a)
    assert first.status_code == 202, first.text
    wait_until(lambda: org.balance() == 17, timeout=30, what="A's generation charged to the organization")
    second = generate(system, a)
    assert second.status_code == 402
    assert {k: second.json()[k] for k in ("account", "reason", "limit", "used", "amount")} == {
        "account": "org", "reason": "limit", "limit": 5, "used": 3, "amount": 3,
    }  # fmt: skip
    spent = post(system, "ledger", f"/api/accounts/{org.account_id}/debits", b, {"amount": 12, "description": "B"})
    assert spent.status_code == 201, spent.text
    assert org.balance() == 5
    short = post(system, "ledger", f"/api/accounts/{org.account_id}/debits", b, {"amount": 6})
    assert (short.status_code, short.json()["account"], short.json()["reason"]) == (402, "org", "credits")
    # Their own accounts were never touched: the welcome bonus each.
    for clerk_id, token in zip(org.clerk_ids[1:], (a, b), strict=True):
        mine = system.token(clerk_id)
        assert account(system, mine, user_id_for(clerk_id))["balance"] == 10
        assert httpx.get(f"{system.url('ledger')}/api/accounts/{user_id_for(clerk_id)}", headers=bearer(token),
                         timeout=30).status_code == 200  # fmt: skip
    # A member's token reaches no other organization's account.
    other = Org(system, credits=1, members=0)
    stranger = httpx.get(f"{system.url('ledger')}/api/accounts/{other.account_id}", headers=bearer(a), timeout=30)
    assert stranger.status_code == 403


def test_thirty_concurrent_spends_by_three_members_never_overdraw_or_pass_a_limit(system: System) -> None:
    org = Org(system, credits=40, members=3)
    limits = {1: 6, 2: None, 3: 9}
    for member, limit in limits.items():
        assert set_limit(system, org.admin, org.clerk_ids[member], limit).status_code == 200
    asks = [(1 + i % 3, 1 + i % 4) for i in range(30)]  # 30 spends of 1-4 credits, 75 asked of 40

    def spend(ask: tuple[int, int]) -> tuple[int, int, int]:
        member, amount = ask
        path = f"/api/accounts/{org.account_id}/debits"
        return member, amount, post(system, "ledger", path, org.tokens[member], {"amount": amount}).status_code

    with ThreadPoolExecutor(max_workers=15) as pool:
        outcomes = list(pool.map(spend, asks))
    assert {status for *_, status in outcomes} <= {201, 402}
    accepted = {m: sum(amount for who, amount, status in outcomes if who == m and status == 201) for m in limits}
    assert org.balance() == 40 - sum(accepted.values()) >= 0
    for member, limit in limits.items():
        assert limit is None or accepted[member] <= limit, (member, accepted)
    history = httpx.get(f"{system.url('ledger')}/api/accounts/{org.account_id}/entries?limit=200",
                        headers=bearer(org.admin), timeout=30).json()["entries"]  # fmt: skip
    by_member = {m: -sum(e["amount"] for e in history if e["type"] == "USAGE"
                         and e["member_id"] == user_id_for(org.clerk_ids[m])) for m in limits}  # fmt: skip
    assert by_member == accepted
    member_history = httpx.get(f"{system.url('ledger')}/api/accounts/{org.account_id}/entries",
                               headers=bearer(org.tokens[1]), timeout=30)  # fmt: skip
    assert member_history.status_code == 403  # the history names every member: for the admins

    # The read models: the dashboard's usage per member is what the ledger's entries say, against each limit.
    def dashboard(token: str) -> dict[str, Any]:
        answer = httpx.get(f"{system.url('projections')}/api/org/dashboard", headers=bearer(token), timeout=30)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    wait_until(lambda: dashboard(org.admin)["account"]["balance"] == org.balance(), timeout=30,
               what="the dashboard caught up with the ledger")  # fmt: skip
    seen = dashboard(org.admin)
    assert seen["org"] == {
        "id": org.id,
        "name": "team",
        "slug": "team",
        "account_id": org.account_id,
        "role": "org:admin",
    }
    usage = {m["user_id"]: (m["used"], m["monthly_limit"], m["role"]) for m in seen["members"]}
    assert usage == {
        user_id_for(org.clerk_ids[0]): (0, None, "org:admin"),
        **{user_id_for(org.clerk_ids[m]): (accepted[m], limits[m], "org:member") for m in limits},
    }
    assert seen["totals"]["used_this_month"] == sum(accepted.values()) == seen["totals"]["credits_spent"]
    assert [lot["remaining"] for lot in seen["lots"]] == [org.balance()]
    mine = dashboard(org.tokens[1])
    assert [m["user_id"] for m in mine["members"]] == [user_id_for(org.clerk_ids[1])]  # a member sees themselves
    assert mine["account"]["balance"] == org.balance()  # and the organization's balance
    credits = httpx.get(f"{system.url('projections')}/api/org/credits?limit=200", headers=bearer(org.tokens[1]),
                        timeout=30).json()  # fmt: skip
    own = user_id_for(org.clerk_ids[1])
    assert {e["member_id"] for e in credits["history"]} <= {own}
    assert -sum(e["amount"] for e in credits["history"]) == accepted[1]


def test_a_removed_members_org_requests_are_refused_and_their_own_account_is_untouched(system: System) -> None:
    org = Org(system, credits=10, members=1)
    member_clerk, member = org.clerk_ids[1], org.tokens[1]
    assert generate(system, member).status_code == 202
    data = clerk_org(org.id, "Team", "team")
    body, headers = clerk_delivery(system.env["CLERK_WEBHOOK_SECRET"], "organizationMembership.deleted",
                                   clerk_membership(data, member_clerk))  # fmt: skip
    assert (
        httpx.post(f"{system.url('identity')}/webhooks/clerk", content=body, headers=headers, timeout=30).status_code
        == 200
    )
    # Probed without a side effect (a generation asked before media's access list has the removal would be a
    # job); then the refusals themselves.
    images = f"{system.url('media')}/api/images"
    wait_until(lambda: httpx.get(images, headers=bearer(member), timeout=30).status_code == 403, timeout=30,
               what="media refusing the removed member")  # fmt: skip
    ledger_account = f"{system.url('ledger')}/api/accounts/{org.account_id}"
    wait_until(lambda: httpx.get(ledger_account, headers=bearer(member), timeout=30).status_code == 403, timeout=30,
               what="the ledger refusing the removed member")  # fmt: skip
    assert generate(system, member).status_code == 403
    refused = post(system, "ledger", f"/api/accounts/{org.account_id}/debits", member, {"amount": 1})
    assert refused.status_code == 403
    wait_until(lambda: org.balance() == 7, timeout=30, what="the generation asked before the removal charged")
    mine = system.token(member_clerk)
    # Their own account, opened by their registration's welcome (an event: waited on), untouched.
    wait_until(lambda: httpx.get(f"{system.url('ledger')}/api/accounts/{user_id_for(member_clerk)}",
                                 headers=bearer(mine), timeout=30).status_code == 200, timeout=30,
               what="the member's own account")  # fmt: skip
    assert account(system, mine, user_id_for(member_clerk))["balance"] == 10
    assert generate(system, mine).status_code == 202  # on their own credit


def test_an_org_admin_buys_a_pack_for_the_organization_and_a_member_may_not(system: System) -> None:
    org = Org(system, credits=1, members=1)
    refused = checkout(system, org.tokens[1], "basic")
    assert (refused.status_code, refused.json()["detail"]) == (
        403,
        f"Only an admin of organization {org.id} may do this.",
    )
    admin = admin_token(system)
    started = checkout(system, org.admin, "basic")
    assert started.status_code == 201, started.text
    assert pay(system, payment_intent_of(system, admin, started.json()["transaction_id"]))["status"] == "succeeded"
    wait_until(lambda: org.balance() == 51, timeout=30, what="the pack granted to the organization's account")
    tx = settled(system, admin, started.json()["transaction_id"], "COMPLETED")
    assert (tx["user_id"], tx["credits"], tx["amount"]) == (org.account_id, 50, 999)
    # The organization's purchases are its admins' to see; the admin's own account was not charged.
    listed = httpx.get(f"{system.url('payments')}/api/user/transactions", headers=bearer(org.admin), timeout=30)
    assert [t["id"] for t in listed.json()["transactions"]] == [tx["id"]]
    assert account(system, system.token(org.clerk_ids[0]), user_id_for(org.clerk_ids[0]))["balance"] == 10


def test_auto_recharge_buys_for_the_organization_when_its_members_spend_it_low(system: System) -> None:
    org = Org(system, credits=8, members=1)
    payments = f"{system.url('payments')}/api/billing"
    saved = httpx.post(f"{payments}/payment-methods", json={"payment_method": card_at_stripe(system)},
                       headers=bearer(org.admin), timeout=30)  # fmt: skip
    assert saved.status_code == 201, saved.text
    setting = {"enabled": True, "threshold": 5, "package_id": "basic", "monthly_cap_cents": 5000}
    on = httpx.put(f"{payments}/auto-recharge", json=setting, headers=bearer(org.admin), timeout=30)
    assert on.status_code == 200, on.text
    wait_until(lambda: account(system, org.admin, org.account_id)["recharge_threshold"] == 5, timeout=20,
               what="the ledger watching the organization's account")  # fmt: skip
    spent = post(system, "ledger", f"/api/accounts/{org.account_id}/debits", org.tokens[1], {"amount": 4})
    assert spent.status_code == 201, spent.text
    wait_until(lambda: org.balance() == 54, timeout=30, what="a Basic pack bought for the organization")
    mine = httpx.get(f"{payments}/auto-recharge", headers=bearer(system.token(org.clerk_ids[0])), timeout=30)
    assert mine.json()["enabled"] is False  # the admin's own account was never set to recharge


def test_an_org_admin_caps_the_organizations_monthly_spending(system: System) -> None:
    org = Org(system, credits=30, members=1)
    url = f"{system.url('ledger')}/api/user/limits"
    member_try = httpx.put(url, json={"monthly_usage_credits": 100}, headers={**bearer(org.tokens[1]),
                           "Idempotency-Key": str(uuid.uuid4())}, timeout=30)  # fmt: skip
    assert member_try.status_code == 403
    capped = httpx.put(url, json={"monthly_usage_credits": 4}, headers={**bearer(org.admin),
                       "Idempotency-Key": str(uuid.uuid4())}, timeout=30)  # fmt: skip
    assert (capped.status_code, capped.json()["account_id"], capped.json()["monthly_usage_credits"]) == (
        200, org.account_id, 4,
    )  # fmt: skip
    path = f"/api/accounts/{org.account_id}/debits"
    assert post(system, "ledger", path, org.tokens[1], {"amount": 3}).status_code == 201
    refused = post(system, "ledger", path, org.tokens[1], {"amount": 2})
    assert (refused.status_code, refused.json()["account"], refused.json()["reason"], refused.json()["cap"]) == (
        402, "org", "cap", 4,
    )  # fmt: skip
    assert org.balance() == 27
