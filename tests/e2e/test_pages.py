"""The dashboard and credits pages in a real browser (Debian's chromium driven by Playwright): sign in as a
developer, see the 10 welcome credits, buy the Basic pack with a test card, and watch the balance badge turn
60 without reloading (the live stream). Screenshots of both pages are kept under test-artifacts/."""

from __future__ import annotations

import uuid

import httpx
from playwright.sync_api import Browser, Page, expect

from shared.contracts.identity import org_account_id_for
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer, clerk_delivery, clerk_membership, clerk_org, new_org_id
from tests.e2e.browsing import ARTIFACTS


def signed_in(browser: Browser, system: System, path: str, clerk_id: str | None = None) -> Page:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{system.url('projections')}{path}")
    page.get_by_label("User id (Clerk id)").fill(clerk_id or f"browser_{uuid.uuid4().hex[:10]}")
    page.get_by_label("Email").fill("browser@example.com")
    page.get_by_label("First name").fill("Bea")
    page.get_by_role("button", name="Sign in").click()
    return page


def test_sign_in_see_ten_buy_basic_and_see_sixty_without_reloading(browser: Browser, system: System) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = signed_in(browser, system, "/credits")
    badge = page.locator("#balance")
    expect(badge).to_have_text("10", timeout=20_000)  # the welcome bonus, projected
    expect(page.locator("#history tr")).to_have_count(1)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    page.get_by_role("button", name="Buy Basic Pack").click()
    expect(page.get_by_label("Card number")).to_be_visible()
    page.get_by_role("button", name="Pay", exact=True).click()
    expect(page.locator("#pay-status")).to_contain_text("Paid", timeout=20_000)
    expect(badge).to_have_text("60", timeout=20_000)  # localstripe's webhook → ledger → projections → stream
    expect(page.locator("#history tr").first).to_contain_text("+50")
    assert navigations == []  # the badge changed with no reload
    page.screenshot(path=str(ARTIFACTS / "credits.png"), full_page=True)

    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("#stat-balance")).to_have_text("60", timeout=20_000)
    expect(page.locator("#stat-transactions")).to_have_text("1")
    expect(page.locator("#activity")).to_contain_text("Bought Basic Pack: 50 credits")
    expect(page.locator("#lots li")).to_have_count(2)  # the welcome bonus's lot and the pack's
    expect(page.locator("#lots")).to_contain_text("50 of 50")
    expect(page.get_by_role("img", name="Credits used per day over 30 days: 0 in all")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.close()


def test_a_declined_test_card_says_so_and_changes_nothing(browser: Browser, system: System) -> None:
    page = signed_in(browser, system, "/credits")
    expect(page.locator("#balance")).to_have_text("10", timeout=20_000)
    page.get_by_role("button", name="Buy Pro Pack").click()
    page.get_by_label("Card number").fill("4000 0000 0000 0341")
    page.get_by_role("button", name="Pay", exact=True).click()
    expect(page.locator("#pay-status")).to_contain_text("refused", timeout=20_000)
    expect(page.locator("#balance")).to_have_text("10")
    page.close()


def test_switch_to_an_organization_and_see_its_balance_and_members(browser: Browser, system: System) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    clerk_id, org_id = f"user_{uuid.uuid4().hex[:10]}", new_org_id()
    org = clerk_org(org_id, "Browser Team", "browser-team")
    body, headers = clerk_delivery(system.env["CLERK_WEBHOOK_SECRET"], "organizationMembership.created",
                                   clerk_membership(org, clerk_id, "org:admin"))  # fmt: skip
    assert (
        httpx.post(f"{system.url('identity')}/webhooks/clerk", content=body, headers=headers, timeout=30).status_code
        == 200
    )
    granted = httpx.post(
        f"{system.url('ledger')}/api/accounts/{org_account_id_for(org_id)}/grants",
        json={"type": "PURCHASE", "amount": 25, "description": "team credits"},
        headers={**bearer(admin_token(system)), "Idempotency-Key": str(uuid.uuid4())}, timeout=30,
    )  # fmt: skip
    assert granted.status_code == 201, granted.text

    page = signed_in(browser, system, "/dashboard", clerk_id)
    badge = page.locator("#balance")
    expect(badge).to_have_text("10", timeout=20_000)  # their own welcome bonus
    switcher = page.get_by_label("Acting for")
    expect(switcher).to_be_visible()
    switcher.select_option(label="Browser Team")
    expect(page.locator("#org-title")).to_have_text("Browser Team · admin", timeout=20_000)
    expect(badge).to_have_text("25", timeout=20_000)  # the organization's balance now
    expect(page.locator("#org-balance")).to_have_text("25")
    expect(page.locator("#org-members tr")).to_have_count(1)
    expect(page.locator("#org-members tr td").first).to_have_text("Bea")
    page.get_by_label("Monthly limit of Bea").fill("7")
    page.get_by_role("button", name="Set limit").click()
    expect(page.locator("#org-status")).to_have_text("Limit saved.", timeout=20_000)
    expect(page.locator("#org-members tr td").nth(3)).to_have_text("7", timeout=20_000)
    page.screenshot(path=str(ARTIFACTS / "org-dashboard.png"), full_page=True)
    page.get_by_label("Acting for").select_option(label="Personal")
    expect(page.locator("#stat-balance")).to_have_text("10", timeout=20_000)
    page.close()
