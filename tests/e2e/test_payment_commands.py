"""Commands that move money: a checkout retried (also seven at once), refunds after credits were spent,
refunds retried, and reconciliation repairing a webhook that never arrived."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.convergence import assert_converged, welcomed
from tests.e2e.stripe_support import (
    checkout,
    deliver,
    intents_for,
    paid_pack,
    pay,
    payment_intent_of,
    signed_event,
    stripe_api,
    transaction,
)


def my_transactions(system: System, token: str, **params: Any) -> dict[str, Any]:
    url = f"{system.url('payments')}/api/user/transactions"
    response = httpx.get(url, params=params, headers=bearer(token), timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def refund(system: System, admin: str, tx_id: str, key: str, **body: Any) -> httpx.Response:
    url = f"{system.url('payments')}/api/admin/transactions/{tx_id}/refund"
    headers = {**bearer(admin), "Idempotency-Key": key}
    return httpx.post(url, json={"reason": "customer asked", **body}, headers=headers, timeout=30)


def test_a_checkout_retried_with_one_key_even_seven_at_once_makes_one_transaction_and_one_intent(
    system: System,
) -> None:
    token, _ = welcomed(system)
    key = str(uuid.uuid4())
    # Seven at once and three more below: the ten checkouts a user may ask in a burst (retries count too).
    with ThreadPoolExecutor(7) as pool:
        answers = list(pool.map(lambda _: checkout(system, token, "pro", key), range(7)))
    assert {a.status_code for a in answers} == {201}
    assert len({(a.json()["transaction_id"], a.json()["client_secret"]) for a in answers}) == 1
    again = checkout(system, token, "pro", key)
    assert again.json() == answers[0].json()
    tx_id = again.json()["transaction_id"]
    assert [t["id"] for t in my_transactions(system, token)["transactions"]] == [tx_id]
    assert len(intents_for(system, tx_id)) == 1

    other = checkout(system, token, "basic", key)
    assert other.status_code == 409, other.text
    assert [t["id"] for t in my_transactions(system, token)["transactions"]] == [tx_id]
    assert checkout(system, token, "no-such-pack").status_code == 404


def test_a_refund_after_credits_were_spent_takes_what_is_left_and_records_the_shortfall(system: System) -> None:
    token, user_id = welcomed(system)
    admin = admin_token(system)
    tx_id, _ = paid_pack(system, token, admin, "basic")  # 10 + 50
    spent = httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/debits",
        json={"amount": 45, "description": "renders", "metadata": {}},
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert spent.status_code == 201, spent.text
    key = str(uuid.uuid4())

    first = refund(system, admin, tx_id, key)
    assert first.status_code == 200, first.text
    refunded = first.json()
    assert refunded["status"] == "REFUNDED"
    assert {k: refunded["metadata"]["refund"][k] for k in ("amount_cents", "credits", "reason")} == {
        "amount_cents": 999, "credits": 50, "reason": "customer asked",
    }  # fmt: skip
    # Retried with its key: the same answer. With another key: a conflict, never a second claw-back.
    assert refund(system, admin, tx_id, key).json() == refunded
    second = refund(system, admin, tx_id, str(uuid.uuid4()))
    assert second.status_code == 409 and "REFUNDED" in second.json()["detail"]
    assert refund(system, admin, tx_id, key, amount_cents=5).status_code == 409  # same key, other request
    # Stripe's own charge.refunded for that refund, later: nothing changes.
    intent = refunded["stripe_payment_intent_id"]
    charge = stripe_api(system, f"payment_intents/{intent}", "GET")["latest_charge"]
    assert deliver(system, *signed_event(system, "charge.refunded", charge)).status_code == 200

    wait_until(lambda: _balance(system, token, user_id) == 0, timeout=20, what="the claw-back")
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [
        ("REFUND", -15), ("USAGE", -45), ("PURCHASE", 50), ("BONUS", 10),
    ]  # fmt: skip
    entries = httpx.get(f"{system.url('ledger')}/api/accounts/{user_id}/entries", headers=bearer(token)).json()
    assert entries["entries"][0]["shortfall"] == 35  # the 35 of the 50 already spent
    assert stripe_api(system, f"charges/{charge['id']}", "GET")["amount_refunded"] == 999  # one refund at Stripe
    assert transaction(system, admin, tx_id)["status"] == "REFUNDED"


def test_a_partial_refund_takes_back_its_share_of_the_credits_and_is_capped_at_the_payment(system: System) -> None:
    token, user_id = welcomed(system)
    admin = admin_token(system)
    tx_id, _ = paid_pack(system, token, admin, "pro")  # 2499 cents, 150 credits
    too_much = refund(system, admin, tx_id, str(uuid.uuid4()), amount_cents=2500)
    assert too_much.status_code == 409 and "1 to 2499" in too_much.json()["detail"]
    half = refund(system, admin, tx_id, str(uuid.uuid4()), amount_cents=1250)
    assert half.status_code == 200, half.text
    assert half.json()["metadata"]["refund"]["credits"] == 76  # ceil(150 * 1250 / 2499)
    wait_until(lambda: _balance(system, token, user_id) == 84, timeout=20, what="76 of 160 taken back")
    stats = httpx.get(f"{system.url('payments')}/api/user/transactions/stats", headers=bearer(token)).json()
    assert stats == {
        "count": 1, "by_status": {"REFUNDED": {"count": 1, "amount": 2499}}, "total_spent": 1249,
        "credits_bought": 74, "currency": "USD",
    }  # fmt: skip
    assert_converged(system, token, user_id)


def test_only_a_completed_payment_is_refunded_and_only_by_an_admin(system: System) -> None:
    token, _ = welcomed(system)
    admin = admin_token(system)
    pending = checkout(system, token, "basic").json()["transaction_id"]
    assert refund(system, admin, pending, str(uuid.uuid4())).status_code == 409
    assert refund(system, token, pending, str(uuid.uuid4())).status_code == 403
    assert refund(system, admin, str(uuid.uuid4()), str(uuid.uuid4())).status_code == 404
    assert transaction(system, admin, pending)["status"] == "PENDING"


def test_reconcile_credits_a_payment_whose_webhook_never_came_once_however_often_it_runs(system: System) -> None:
    token, user_id = welcomed(system)
    admin = admin_token(system)
    tx_id = checkout(system, token, "basic").json()["transaction_id"]
    intent = payment_intent_of(system, admin, tx_id)
    api = system.env["STRIPE_API_BASE"]
    webhook = f"{system.url('payments')}/webhooks/stripe"
    # The webhook is lost: localstripe sends it to a port where nobody listens.
    httpx.post(f"{api}/_config/webhooks/creditstream", data={"url": "http://127.0.0.1:9/", "secret": "whsec_x"})
    try:
        pay(system, intent)
        wait_until(lambda: _emitted(system, intent), timeout=10, what="localstripe emitting the event")
        wait_until(lambda: _sent_by_now(system, intent), timeout=10, what="the lost delivery")
    finally:
        secret = system.env["STRIPE_WEBHOOK_SECRET"]
        httpx.post(f"{api}/_config/webhooks/creditstream", data={"url": webhook, "secret": secret})
    assert transaction(system, admin, tx_id)["status"] == "PENDING"

    first = _reconcile(system)
    assert first.returncode == 0, first.stdout + first.stderr
    assert tx_id in first.stdout and "PENDING" in first.stdout and "COMPLETED" in first.stdout
    assert transaction(system, admin, tx_id)["status"] == "COMPLETED"
    wait_until(lambda: _balance(system, token, user_id) == 60, timeout=20, what="the repaired purchase")

    second = _reconcile(system)
    assert second.returncode == 0 and "Nothing to repair" in second.stdout, second.stdout
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("PURCHASE", 50), ("BONUS", 10)]


def _emitted(system: System, intent: str) -> bool:
    events = stripe_api(system, "events?type=payment_intent.succeeded&limit=100", "GET")["data"]
    return any(e["data"]["object"]["id"] == intent for e in events)


def _sent_by_now(system: System, intent: str) -> bool:
    # localstripe posts each event once, a second after emitting it: wait that second out.
    events = stripe_api(system, "events?type=payment_intent.succeeded&limit=100", "GET")["data"]
    created = max(e["created"] for e in events if e["data"]["object"]["id"] == intent)
    return time.time() > created + 2.5


def _reconcile(system: System) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **system.env, "PAYMENTS_PORT": str(system.services["payments"].port)}
    command = [str(Path(sys.executable).parent / "creditstream"), "payments", "reconcile", "--since", "1h"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def _balance(system: System, token: str, user_id: str) -> int:
    account = httpx.get(f"{system.url('ledger')}/api/accounts/{user_id}", headers=bearer(token), timeout=30).json()
    return int(account["balance"])
