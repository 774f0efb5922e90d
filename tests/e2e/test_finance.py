"""Finance on a system of its own: a month of sales, spending, a refund and expiries, and the revenue report
(JSON, CSV, by operation, the CLI) equal to the same month computed by hand to the cent; a replay from sequence
1 gives the same report; the audit recounts it from the stream and names a tampered cent."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import psycopg
import pytest

from shared.db import schema_conninfo
from shared.testing.waiting import wait_until
from tests.conftest import System, system_of_its_own
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.convergence import assert_converged, ledger_view, welcomed
from tests.e2e.stripe_support import card_at_stripe, paid_pack, settled
from tests.e2e.test_media_images import command, completed
from tests.e2e.test_payment_commands import refund
from tests.e2e.test_promo_codes import make_code, redeem
from tests.e2e.test_subscriptions import call, subscribe

PAST_EVERY_EXPIRY = str(40 * 86400)  # the subscription's period (a month) and the promo lot's day are over
FIGURES = ("deferred_opening", "sold", "recognised", "breakage", "refunded", "deferred_closing")


@pytest.fixture(scope="module")
def booked(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system of its own: its ledger's clock is moved past every expiry, and its books hold only this month."""
    with system_of_its_own(database_url, tmp_path_factory.mktemp("booked")) as (running, _):
        yield running


def worth(value: int, credits: int, taken: int) -> int:
    """The stated rule by hand: value * taken / credits, half up to the cent."""
    return int((Decimal(value) * taken / credits).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def report(system: System, month: str, **params: str) -> httpx.Response:
    return httpx.get(f"{system.url('projections')}/api/admin/finance/revenue", params={"month": month, **params},
                     headers=bearer(admin_token(system)), timeout=30)  # fmt: skip


def figures_over(system: System, months: list[str], **params: str) -> dict[str, int]:
    """USD's figures from the first month's opening to the last one's closing (one month unless the test ran
    across the end of one)."""
    reports = [report(system, month, **params).json()["currencies"] for month in months]
    usd = [next((c for c in r if c["currency"] == "USD"), {f: 0 for f in FIGURES}) for r in reports]
    flows = {f: sum(int(u[f]) for u in usd) for f in ("sold", "recognised", "breakage", "refunded")}
    return {"deferred_opening": int(usd[0]["deferred_opening"]), **flows,
            "deferred_closing": int(usd[-1]["deferred_closing"])}  # fmt: skip


def debit(system: System, token: str, user_id: str, amount: int) -> None:
    answer = httpx.post(f"{system.url('ledger')}/api/accounts/{user_id}/debits", json={"amount": amount},
                        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())}, timeout=30)  # fmt: skip
    assert answer.status_code == 201, answer.text


def balance(system: System, token: str, user_id: str) -> int:
    return int(ledger_view(system, token, user_id)["balance"])


def test_a_months_revenue_equals_the_hand_computation_to_the_cent(booked: System) -> None:
    system = booked
    started = this_month()
    token, user_id = welcomed(system)  # 10 free credits: worth nothing
    admin = admin_token(system)
    paid_pack(system, token, admin, "basic")  # 50 credits for 999
    pro, _ = paid_pack(system, token, admin, "pro")  # 150 credits for 2499
    assert refund(system, admin, pro, "finance-refund", amount_cents=1000).status_code == 200
    settled(system, admin, pro, "REFUNDED")
    wait_until(lambda: any(e["type"] == "REFUND" for e in ledger_view(system, token, user_id)["entries"]),
               timeout=20, what="the refund's claw-back")  # fmt: skip
    clawed = -next(e["amount"] for e in ledger_view(system, token, user_id)["entries"] if e["type"] == "REFUND")
    debit(system, token, user_id, 20)  # the welcome 10 (free), then 10 of the Basic pack's (oldest first)

    saved = call(system, token, "POST", "/api/billing/payment-methods", json={"payment_method": card_at_stripe(system)})
    assert saved.status_code == 201, saved.text
    assert subscribe(system, token, "starter").status_code == 201  # 100 credits for 900, until the period's end
    before = 10 + 50 + 150 - clawed - 20
    wait_until(lambda: balance(system, token, user_id) == before + 100, timeout=30, what="the period's credits")
    made = command(system, token, "/api/images/generate", {"prompt": "books", "width": 32, "height": 32})
    assert made.status_code == 202, made.text
    job = completed(system, token, made.json()["id"])
    assert job["status"] == "COMPLETED"
    wait_until(lambda: balance(system, token, user_id) == before + 97, timeout=30, what="the generation's capture")
    debit(system, token, user_id, 14)  # with the generation's 3: 17 of the subscription's (it expires first)
    code = make_code(system, credits=15, max_redemptions=1, credits_expire_in_days=1)["code"]
    assert redeem(system, token, code).status_code == 201  # 15 free credits, gone tomorrow
    wait_until(lambda: balance(system, token, user_id) == before + 97 - 14 + 15, timeout=30, what="the promo lot")

    def priced() -> dict[str, tuple[int, str | None, str]]:
        url = f"{system.url('projections')}/api/user/dashboard"
        lots = httpx.get(url, headers=bearer(token), timeout=30).json()["lots"]
        return {lot["description"]: (lot["value_cents"], lot["currency"], lot["price_per_credit"]) for lot in lots}

    wait_until(lambda: len(priced()) == 4, timeout=20, what="the four lots with credit left, projected")
    lots = priced()
    assert lots["Purchase of 50 credits"] == (999, "USD", "19.9800")
    assert lots["Purchase of 150 credits"] == (2499, "USD", "16.6600")
    assert lots["Subscription: 100 credits"] == (900, "USD", "9.0000")
    assert lots[f"Promo code {code.upper()}"] == (0, None, "0.0000")

    system.services["ledger"].restart(CLOCK_OFFSET_SECONDS=PAST_EVERY_EXPIRY).wait_ready()
    left = before + 97 - 14 + 15 - 83 - 15  # the subscription's 83 and the promo's 15 expire
    wait_until(lambda: balance(system, token, user_id) == left, timeout=30, what="both lots expired")
    view = assert_converged(system, token, user_id)
    assert sorted(e["amount"] for e in view["entries"] if e["type"] == "EXPIRED") == [-83, -15]

    sold = 999 + 2499 + 900
    recognised = worth(999, 50, 10) + worth(900, 100, 3) + (worth(900, 100, 17) - worth(900, 100, 3))
    breakage = 900 - worth(900, 100, 17)  # the promo lot's expiry is worth nothing
    refunded = worth(2499, 150, clawed)
    expected = {"deferred_opening": 0, "sold": sold, "recognised": recognised, "breakage": breakage,
                "refunded": refunded, "deferred_closing": (999 - worth(999, 50, 10)) + (2499 - refunded)}  # fmt: skip
    assert (recognised, breakage) == (200 + 27 + 126, 747)
    assert expected["deferred_closing"] == sold - recognised - breakage - refunded  # the identity, by hand too
    wait_until(lambda: figures_over(system, sorted({started, this_month()}), account_id=user_id) == expected,
               timeout=30, what="the report = the hand computation")  # fmt: skip
    months = sorted({started, this_month()})
    assert figures_over(system, months) == expected  # nobody else sold anything on this system

    month = months[-1]
    as_json = report(system, month).json()
    assert "round_half_up" in as_json["rounding"]
    as_csv = report(system, month, format="csv")
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [{k: (r[k] if k in ("month", "currency") else int(r[k])) for k in r} for r in rows] == [
        {"month": month, **c} for c in as_json["currencies"]
    ]

    by_operation = httpx.get(f"{system.url('projections')}/api/admin/finance/revenue/by-operation",
                             params={"month": month, "account_id": user_id}, headers=bearer(admin),
                             timeout=30).json()["operations"]  # fmt: skip
    if len(months) == 1:
        assert {(o["operation"], o["credits"], o["recognised"]) for o in by_operation} == {
            ("image_generation", 3, 27), ("debit", 10 + 14, 200 + 126),
        }  # fmt: skip
    printed = system.cli("finance", "--month", month)
    assert printed.returncode == 0, printed.stdout + printed.stderr
    usd = next(c for c in as_json["currencies"] if c["currency"] == "USD")
    assert f"{usd['deferred_closing'] / 100:,.2f}" in printed.stdout and "recognised" in printed.stdout

    _replayed_gives_the_same_report(system, month, as_json)
    _audit_recounts_the_books(system)


def _replayed_gives_the_same_report(system: System, month: str, before: dict[str, Any]) -> None:
    replayed = system.cli("replay", "projections")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert report(system, month).json() == before


def _audit_recounts_the_books(system: System) -> None:
    clean = system.cli("audit")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    with psycopg.connect(schema_conninfo(system.env["DATABASE_URL"], "projections"), autocommit=True) as conn:
        conn.execute("UPDATE finance_entries SET cents = cents + 1 WHERE kind = 'breakage'")
    found = system.cli("audit")
    assert found.returncode == 1, found.stdout + found.stderr
    (mismatch,) = [line for line in found.stdout.splitlines() if "MISMATCH" in line]
    assert "finance" in mismatch and "USD breakage cents: expected 747, found 748" in mismatch, mismatch
