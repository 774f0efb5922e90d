"""The admin console (`/admin` on projections) in a real browser: an admin finds a user, adjusts their balance
by +5 with a reason and sees the entry, with their own id, in the ledger history the page reads back; the
finance chart and the operators' view are drawn from the services' answers. A user without the admin role
gets no console: the APIs answer 403 and the page says so. A screenshot is kept under test-artifacts/."""

from __future__ import annotations

import re
import uuid

import httpx
from playwright.sync_api import Browser, Page, expect

from shared.auth import user_id_for
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.browsing import ARTIFACTS
from tests.e2e.convergence import welcomed


def console(browser: Browser, system: System, clerk_id: str, *, admin: bool) -> Page:
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(f"{system.url('projections')}/admin")
    page.get_by_label("User id (Clerk id)").fill(clerk_id)
    page.get_by_label("with the admin role").set_checked(admin)
    page.get_by_role("button", name="Sign in").click()
    return page


def test_an_admin_finds_a_user_adjusts_five_with_a_reason_and_sees_the_entry(browser: Browser, system: System) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _, user_id = welcomed(system)
    email = httpx.get(f"{system.url('identity')}/api/admin/users/{user_id}", headers=bearer(admin_token(system)),
                      timeout=30).json()["email"]  # fmt: skip
    admin_clerk = f"admin_{uuid.uuid4().hex[:8]}"
    page = console(browser, system, admin_clerk, admin=True)

    page.get_by_label("Email or name").fill(email.split("@")[0])
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#found tr")).to_have_count(1, timeout=20_000)
    page.get_by_role("button", name=f"Open {email}").click()
    expect(page.locator("#user-title")).to_have_text(email)
    expect(page.locator("#user-balance")).to_have_text("10", timeout=20_000)
    expect(page.locator("#user-history tr")).to_have_count(1)  # the welcome bonus

    page.get_by_label("Credits (negative takes away)").fill("5")
    page.get_by_label("Reason", exact=True).fill("goodwill: a render failed twice")
    page.get_by_role("button", name="Adjust").click()
    expect(page.locator("#action-status")).to_have_text("Adjusted by 5: the balance is 15.", timeout=20_000)
    expect(page.locator("#user-balance")).to_have_text("15")
    newest = page.locator("#user-history tr").first
    expect(newest).to_contain_text("ADMIN_ADJUSTMENT")
    expect(newest).to_contain_text("+5")
    expect(newest).to_contain_text("goodwill: a render failed twice")
    expect(newest).to_contain_text(user_id_for(admin_clerk))  # the audit trail names the admin

    # What the page showed is what the ledger holds: one adjustment, by this admin, with the reason.
    entries = httpx.get(f"{system.url('ledger')}/api/accounts/{user_id}/entries", headers=bearer(admin_token(system)),
                        timeout=30).json()["entries"]  # fmt: skip
    assert [(e["type"], e["amount"], e["balance_after"]) for e in entries] == [
        ("ADMIN_ADJUSTMENT", 5, 15), ("BONUS", 10, 10),
    ]  # fmt: skip
    assert entries[0]["metadata"] == {"admin_id": user_id_for(admin_clerk), "reason": "goodwill: a render failed twice"}

    # The rest of the console is drawn from the services' answers.
    expect(page.get_by_role("img", name=re.compile("^Sold, recognised and deferred revenue per month"))).to_be_visible()
    expect(page.locator("#finance-chart rect")).to_have_count(18)  # six months, three figures each
    expect(page.locator("#read-models tr")).not_to_have_count(0)
    expect(page.locator("#read-models")).to_contain_text("projections-ledger")
    expect(page.locator("#dead-letters")).to_have_text("None parked.")
    expect(page.locator("#backlog")).to_contain_text("relay")
    page.screenshot(path=str(ARTIFACTS / "admin.png"), full_page=True)
    page.close()


def test_a_user_without_the_admin_role_gets_no_console(browser: Browser, system: System) -> None:
    token, user_id = welcomed(system)
    clerk_id = httpx.get(f"{system.url('identity')}/api/admin/users/{user_id}", headers=bearer(admin_token(system)),
                         timeout=30).json()["clerk_id"]  # fmt: skip
    page = console(browser, system, clerk_id, admin=False)
    expect(page.locator("#refused-why")).to_contain_text("for admins only", timeout=20_000)
    expect(page.locator("#refused-why")).to_contain_text("403")
    expect(page.locator("#console")).to_be_hidden()
    page.close()

    # Not only the page: every API the console calls refuses this token, and the refused adjustment took nothing.
    def get(service: str, path: str) -> httpx.Response:
        return httpx.get(f"{system.url(service)}{path}", headers=bearer(token), timeout=30)

    adjusted = httpx.post(f"{system.url('ledger')}/api/admin/accounts/{user_id}/adjustments",
                          json={"amount": 5, "reason": "myself"},
                          headers={**bearer(token), "Idempotency-Key": uuid.uuid4().hex}, timeout=30)  # fmt: skip
    refused = {
        "search": get("identity", "/api/admin/users"),
        "adjust": adjusted,
        "jobs": get("projections", f"/api/admin/users/{user_id}/jobs"),
        "promo codes": get("payments", "/api/admin/promo-codes"),
        "finance": get("projections", "/api/admin/finance/revenue"),
        "dead letters": get("ledger", "/dead-letters"),
    }
    assert {what: r.status_code for what, r in refused.items()} == dict.fromkeys(refused, 403)
    balance = httpx.get(f"{system.url('ledger')}/api/accounts/{user_id}", headers=bearer(token), timeout=30)
    assert balance.json()["balance"] == 10
