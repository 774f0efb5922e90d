"""Organizations and memberships at identity: Clerk's webhooks and org-scoped sign-ins, in either order and
however often redelivered, leave the same organization and members; a removal is final for the tokens
issued before it."""

from __future__ import annotations

import uuid

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
    org_outbox,
    org_rows,
    stream_events,
)


def deliver(system: System, kind: str, data: dict, svix_id: str | None = None) -> dict:
    body, headers = clerk_delivery(system.env["CLERK_WEBHOOK_SECRET"], kind, data, svix_id=svix_id)
    response = httpx.post(f"{system.url('identity')}/webhooks/clerk", content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def sync(system: System, token: str) -> None:
    response = httpx.post(f"{system.url('identity')}/api/user/sync", headers=bearer(token), timeout=30)
    assert response.status_code == 200, response.text


def org_of(system: System, token: str) -> httpx.Response:
    return httpx.get(f"{system.url('identity')}/api/org", headers=bearer(token), timeout=30)


def an_org_told(system: System, *, webhooks_first: bool) -> tuple[object, ...]:
    """An organization with an admin and a member, told by webhooks and by both members' sign-ins in the
    given order, then all of it again; what identity stores (ids aside) and announced."""
    org_id, admin, member = new_org_id(), new_clerk_id(), new_clerk_id()
    org = clerk_org(org_id, "Acme Studio", "acme", updated_at=1_000)
    deliveries = [
        ("organization.created", org),
        ("organizationMembership.created", clerk_membership(org, admin, "org:admin", updated_at=1_000)),
        ("organizationMembership.created", clerk_membership(org, member, "org:member", updated_at=1_000)),
    ]
    svix_ids = [f"msg_{i}{org_id[4:]}" for i in range(len(deliveries))]
    tokens = [
        system.token(admin, org_id=org_id, org_role="org:admin", org_slug="acme"),
        system.token(member, org_id=org_id, org_role="org:member", org_slug="acme"),
    ]

    def webhooks(duplicate: bool) -> None:
        for (kind, data), svix_id in zip(deliveries, svix_ids, strict=True):
            assert deliver(system, kind, data, svix_id)["duplicate"] is duplicate

    def sign_ins() -> None:
        for token in tokens:
            sync(system, token)

    if webhooks_first:
        webhooks(duplicate=False)
        sign_ins()
    else:
        sign_ins()
        webhooks(duplicate=False)
    announced = org_outbox(system, org_id)
    webhooks(duplicate=True)  # Svix redelivers; people sign in again
    sign_ins()
    assert org_outbox(system, org_id) == announced, "a redelivery or a second sign-in announced something"
    stored, members = org_rows(system, org_id)
    assert stored == (org_id, "Acme Studio", "acme", False)
    assert members == sorted([
        (user_id_for(admin), admin, "org:admin", False), (user_id_for(member), member, "org:member", False)
    ])  # fmt: skip
    # The sign-in knows the slug only: Clerk's name comes after it as an update.
    renamed = [] if webhooks_first else ["identity.org.updated"]
    assert sorted(announced) == sorted(["identity.org.created", *renamed, *["identity.org.member.added"] * 2])
    answer = org_of(system, tokens[0])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "id": org_id, "name": "Acme Studio", "slug": "acme", "account_id": org_account_id_for(org_id),
        "role": "org:admin", "members": 2,
    }  # fmt: skip
    assert org_of(system, tokens[1]).json()["members"] is None  # only admins see how many
    return stored[1:], sorted((role, removed) for _, _, role, removed in members)


def test_webhooks_and_sign_ins_in_either_order_converge_and_redeliveries_change_nothing(system: System) -> None:
    assert an_org_told(system, webhooks_first=True) == an_org_told(system, webhooks_first=False)


def test_a_member_removed_by_webhook_is_refused_in_the_org_and_keeps_their_own_account(system: System) -> None:
    org_id, clerk_id = new_org_id(), new_clerk_id()
    org = clerk_org(org_id, "Removal Co", "removal")
    membership = clerk_membership(org, clerk_id, "org:member")
    deliver(system, "organizationMembership.created", membership)
    org_token = system.token(clerk_id, org_id=org_id)
    personal = system.token(clerk_id)
    sync(system, personal)
    assert org_of(system, org_token).status_code == 200

    deliver(system, "organizationMembership.deleted", membership)
    refused = org_of(system, org_token)
    # Identity's own word, or its access list's if that came first: either way, no longer a member.
    assert refused.status_code == 403 and f"member of organization {org_id}." in refused.json()["detail"]
    # The token issued before the removal cannot sign them back in to it.
    stale = httpx.post(f"{system.url('identity')}/api/user/sync", headers=bearer(org_token), timeout=30)
    assert stale.status_code in (200, 403)  # refused at the door once identity's access list has the removal
    assert org_rows(system, org_id)[1] == [(user_id_for(clerk_id), clerk_id, "org:member", True)]
    # Every other service refuses the token too, once identity's word has reached it.
    ledger = f"{system.url('ledger')}/api/accounts/{org_account_id_for(org_id)}"
    wait_until(lambda: httpx.get(ledger, headers=bearer(org_token), timeout=30).status_code == 403, timeout=30,
               what="the ledger refusing the removed member")  # fmt: skip
    mine = httpx.get(
        f"{system.url('ledger')}/api/accounts/{user_id_for(clerk_id)}", headers=bearer(personal), timeout=30
    )
    assert (mine.status_code, mine.json()["balance"]) == (200, 10)

    # Added again (a new Clerk membership): in again.
    deliver(system, "organizationMembership.created", clerk_membership(org, clerk_id, "org:admin", updated_at=5))
    assert org_of(system, system.token(clerk_id, org_id=org_id, org_role="org:admin")).json()["role"] == "org:admin"


def test_a_deleted_organization_is_gone_for_its_members(system: System) -> None:
    org_id, clerk_id = new_org_id(), new_clerk_id()
    token = system.token(clerk_id, org_id=org_id, org_role="org:admin", org_slug="gone")
    sync(system, token)
    assert org_of(system, token).json()["name"] == "gone"
    deliver(system, "organization.deleted", {"id": org_id, "object": "organization", "deleted": True})
    # Gone at identity (404), or refused at the door once identity's access list has the deletion (403).
    assert org_of(system, token).status_code in (403, 404)
    again = httpx.post(f"{system.url('identity')}/api/user/sync", headers=bearer(token), timeout=30)
    assert again.status_code in (200, 403)  # a sign-in with it changes nothing
    assert org_rows(system, org_id)[0] == (org_id, "gone", "gone", True)
    assert org_outbox(system, org_id) == ["identity.org.created", "identity.org.member.added", "identity.org.deleted"]
    # Its account is deactivated: nothing more is spent of it, by anyone.
    ledger = f"{system.url('ledger')}/api/accounts/{org_account_id_for(org_id)}"
    admin = bearer(admin_token(system))
    wait_until(lambda: httpx.get(ledger, headers=admin, timeout=30).json().get("active") is False, timeout=30,
               what="the organization's account deactivated")  # fmt: skip
    spent = httpx.post(f"{ledger}/debits", json={"amount": 1}, headers={**admin, "Idempotency-Key": "gone"}, timeout=30)
    assert (spent.status_code, spent.json()["detail"]) == (403, "the account is deactivated")
    plain = org_of(system, system.token(clerk_id))
    assert (plain.status_code, plain.json()["detail"]) == (
        404, "The token has no active organization: switch to one in Clerk first."
    )  # fmt: skip


def test_an_erased_user_leaves_every_organization(system: System) -> None:
    org_id, clerk_id = new_org_id(), new_clerk_id()
    sync(system, system.token(clerk_id, org_id=org_id, org_slug="forgetful"))
    root_clerk = f"admin_{uuid.uuid4().hex[:8]}"
    erased = httpx.post(f"{system.url('identity')}/api/admin/users/{user_id_for(clerk_id)}/erase",
                        headers=bearer(system.token(root_clerk, role="admin")), timeout=30)  # fmt: skip
    assert erased.status_code == 200, erased.text

    # The audit trail names the admin who asked for it.
    def said() -> list[str | None]:
        events = stream_events(system, "IDENTITY", "identity.user.erased", user_id_for(clerk_id))
        return [e["data"]["by"] for e in events]

    wait_until(lambda: bool(said()), timeout=30, what="identity.user.erased on the stream")
    assert said() == [user_id_for(root_clerk)]
    assert org_rows(system, org_id)[1] == [(user_id_for(clerk_id), clerk_id, "org:member", True)]
    assert org_outbox(system, org_id)[-1] == "identity.org.member.removed"
