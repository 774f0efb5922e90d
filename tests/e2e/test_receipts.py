"""Receipts: a paid purchase's and a refunded one's, as HTML a browser prints, rendered in Chromium."""

from __future__ import annotations

import httpx
from playwright.sync_api import Browser

from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.browsing import ARTIFACTS
from tests.e2e.convergence import welcomed
from tests.e2e.stripe_support import paid_pack, settled
from tests.e2e.test_payment_commands import refund


def receipt(system: System, token: str, tx_id: str) -> httpx.Response:
    return httpx.get(f"{system.url('payments')}/api/user/transactions/{tx_id}/receipt", headers=bearer(token),
                     timeout=30)  # fmt: skip


def test_a_paid_and_a_refunded_purchases_receipts_say_what_was_bought_and_given_back(
    browser: Browser, system: System
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    token, _ = welcomed(system)
    admin = admin_token(system)
    paid, _ = paid_pack(system, token, admin, "basic")
    refunded, _ = paid_pack(system, token, admin, "pro")
    assert refund(system, admin, refunded, "receipt-refund", amount_cents=1000).status_code == 200
    settled(system, admin, refunded, "REFUNDED")

    page = browser.new_page(viewport={"width": 900, "height": 700})
    for tx_id, name, expected in (
        (paid, "receipt-paid.png", ["Basic Pack: 50 credits", "50 credits", "9.99 USD", "Credits granted: 50"]),
        (refunded, "receipt-refunded.png",
         ["Pro Pack: 150 credits", "24.99 USD", "-10.00 USD", "14.99 USD", "Refunded", "taken back by the refund"]),
    ):  # fmt: skip
        answer = receipt(system, token, tx_id)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        page.set_content(answer.text)
        shown = page.inner_text("body")
        for text in expected:
            assert text in shown, (text, shown)
        assert tx_id in shown
        page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    page.close()
    other, _ = welcomed(system)
    assert receipt(system, other, paid).status_code == 404  # someone else's transaction is none of theirs
