"""How Stripe's word moves a transaction (domain.observe) and what a refund claws back, by value."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payments.domain import Kind, PaymentState, Status, Transaction, credits_to_claw_back, observe

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(minutes=5)
PI = "pi_3PaymentIntentOfTx1"


def transaction(
    status: Status = Status.PENDING,
    *,
    amount_cents: int = 2499,
    currency: str = "USD",
    credits: int = 150,
    payment_intent: str | None = PI,
    metadata: dict[str, Any] | None = None,
) -> Transaction:
    return Transaction(
        id="6f1c3a52-8f0e-4d8e-9a51-2f1f0c6b7a11",
        user_id="user-1",
        kind=Kind.CREDIT_PURCHASE,
        status=status,
        amount_cents=amount_cents,
        currency=currency,
        credits=credits,
        description="Pro pack",
        package_id="pro",
        stripe_payment_intent_id=payment_intent,
        metadata={} if metadata is None else metadata,
        created_at=T0,
        updated_at=T0,
    )


def stripe_says(status: str, **fields: Any) -> PaymentState:
    defaults: dict[str, Any] = {"payment_intent_id": PI, "amount": 2499, "currency": "usd"}
    return PaymentState(status=status, **{**defaults, **fields})


def test_a_succeeded_payment_completes_a_pending_transaction_and_announces_it() -> None:
    tx = transaction()
    change = observe(tx, stripe_says("succeeded", charge_id="ch_1"), LATER)
    assert change.changed and change.refused is None
    assert (change.previous, change.announced) == (Status.PENDING, (Status.COMPLETED,))
    assert change.transaction.status is Status.COMPLETED
    assert change.transaction.updated_at == LATER
    assert change.transaction.metadata == {"charge_id": "ch_1"}
    assert tx.status is Status.PENDING and tx.metadata == {}  # the observed transaction is left as it was


def test_a_failed_attempt_fails_a_pending_transaction_and_keeps_stripes_reason() -> None:
    state = stripe_says("requires_payment_method", failure="Your card was declined.")
    change = observe(transaction(), state, LATER)
    assert change.announced == (Status.FAILED,)
    assert change.transaction.status is Status.FAILED
    assert change.transaction.metadata["failure"] == "Your card was declined."


def test_a_failed_transaction_completes_when_the_customer_pays_with_another_card() -> None:
    failed = transaction(Status.FAILED, metadata={"failure": "Your card was declined."})
    change = observe(failed, stripe_says("succeeded", charge_id="ch_2"), LATER)
    assert (change.previous, change.announced) == (Status.FAILED, (Status.COMPLETED,))
    assert change.transaction.status is Status.COMPLETED
    assert change.transaction.metadata["charge_id"] == "ch_2"
    assert "failure" not in change.transaction.metadata  # the first card's decline no longer explains anything


def test_another_failed_attempt_of_a_failed_transaction_announces_nothing_more() -> None:
    failed = transaction(Status.FAILED, metadata={"failure": "Your card was declined."})
    change = observe(failed, stripe_says("requires_payment_method", failure="Insufficient funds."), LATER)
    assert not change.changed and change.transaction is failed


def test_a_late_payment_failed_never_turns_completed_back() -> None:
    completed = transaction(Status.COMPLETED)
    change = observe(completed, stripe_says("requires_payment_method", failure="Your card was declined."), LATER)
    assert not change.changed and change.announced == () and change.refused is None
    assert change.transaction is completed
    assert change.transaction.updated_at == T0


def test_a_late_cancel_never_turns_completed_back() -> None:
    completed = transaction(Status.COMPLETED)
    change = observe(completed, stripe_says("canceled"), LATER)
    assert not change.changed and change.transaction is completed


def test_a_cancel_of_a_pending_or_failed_transaction_cancels_it() -> None:
    for start in (Status.PENDING, Status.FAILED):
        change = observe(transaction(start), stripe_says("canceled"), LATER)
        assert (change.previous, change.announced) == (start, (Status.CANCELLED,))
        assert change.transaction.status is Status.CANCELLED


def test_a_refund_seen_first_announces_completed_then_refunded() -> None:
    state = stripe_says("succeeded", charge_id="ch_1", amount_refunded=2499, refund_id="re_1")
    change = observe(transaction(), state, LATER)
    assert change.announced == (Status.COMPLETED, Status.REFUNDED)
    assert change.transaction.status is Status.REFUNDED
    assert change.transaction.refunded_cents == 2499 and change.transaction.credits_clawed_back == 150


def test_a_refund_of_a_completed_transaction_records_what_was_refunded_and_clawed_back() -> None:
    completed = transaction(Status.COMPLETED, metadata={"charge_id": "ch_1"})
    state = stripe_says("succeeded", charge_id="ch_1", amount_refunded=1250, refund_id="re_1")
    change = observe(completed, state, LATER, reason="requested_by_customer")
    assert (change.previous, change.announced) == (Status.COMPLETED, (Status.REFUNDED,))
    assert change.transaction.status is Status.REFUNDED
    assert change.transaction.metadata["refund"] == {
        "refund_id": "re_1",
        "amount_cents": 1250,
        "credits": 76,
        "reason": "requested_by_customer",
        "charge_id": "ch_1",
    }
    assert (change.transaction.refunded_cents, change.transaction.credits_clawed_back) == (1250, 76)


def test_a_later_bigger_refund_of_a_refunded_transaction_claws_back_nothing_more() -> None:
    first = observe(transaction(Status.COMPLETED), stripe_says("succeeded", amount_refunded=100), LATER).transaction
    assert first.status is Status.REFUNDED
    change = observe(first, stripe_says("succeeded", amount_refunded=2499), LATER + timedelta(days=1))
    assert not change.changed and change.transaction is first
    assert (first.refunded_cents, first.credits_clawed_back) == (100, 7)  # ceil(150 * 100 / 2499) = ceil(6.0...)


@pytest.mark.parametrize(
    ("amount", "currency"),
    [(2500, "usd"), (2498, "usd"), (0, "usd"), (2499, "eur"), (2499, "")],
    ids=["one-cent-more", "one-cent-less", "nothing", "another-currency", "no-currency"],
)
def test_a_payment_intent_charging_another_amount_or_currency_is_refused(amount: int, currency: str) -> None:
    tx = transaction()
    change = observe(tx, stripe_says("succeeded", amount=amount, currency=currency), LATER)
    assert change.refused is not None and str(amount) in change.refused
    assert not change.changed and change.transaction is tx and change.previous is Status.PENDING


def test_the_currencys_case_does_not_matter() -> None:
    change = observe(transaction(currency="usd"), stripe_says("succeeded", currency="USD"), LATER)
    assert change.refused is None and change.announced == (Status.COMPLETED,)


def test_another_payment_intent_than_the_transactions_is_refused() -> None:
    tx = transaction()
    change = observe(tx, stripe_says("succeeded", payment_intent_id="pi_3SomeoneElses"), LATER)
    assert change.refused is not None and "pi_3SomeoneElses" in change.refused
    assert not change.changed and change.transaction is tx


def test_a_transaction_that_knew_no_payment_intent_takes_the_observed_one() -> None:
    change = observe(transaction(payment_intent=None), stripe_says("succeeded"), LATER)
    assert change.announced == (Status.COMPLETED,)
    assert change.transaction.stripe_payment_intent_id == PI


@pytest.mark.parametrize(
    "status", ["processing", "requires_action", "requires_confirmation", "requires_payment_method", "requires_capture"]
)
def test_an_undecided_payment_intent_changes_nothing(status: str) -> None:
    for start in (Status.PENDING, Status.FAILED, Status.COMPLETED):
        tx = transaction(start)
        change = observe(tx, stripe_says(status, charge_id="ch_1"), LATER)
        assert not change.changed and change.refused is None and change.transaction is tx


def test_the_same_observation_twice_announces_once() -> None:
    state = stripe_says("succeeded", amount_refunded=2499)
    first = observe(transaction(), state, LATER)
    second = observe(first.transaction, state, LATER + timedelta(seconds=1))
    assert first.announced == (Status.COMPLETED, Status.REFUNDED)
    assert not second.changed and second.transaction is first.transaction


def test_a_full_refund_claws_back_every_credit() -> None:
    tx = transaction()
    assert credits_to_claw_back(tx, 2499) == 150
    assert credits_to_claw_back(tx, 5000) == 150  # never more than the transaction gave


def test_a_partial_refund_claws_back_its_share_rounded_up() -> None:
    tx = transaction()
    assert credits_to_claw_back(tx, 1249) == 75  # 150 * 1249 / 2499 = 74.97
    assert credits_to_claw_back(tx, 1250) == 76  # 150 * 1250 / 2499 = 75.03
    assert credits_to_claw_back(tx, 1666) == 100  # 150 * 1666 / 2499 = 100 exactly: not rounded further


def test_a_one_cent_refund_claws_back_one_credit_and_none_claws_back_nothing() -> None:
    tx = transaction()
    assert credits_to_claw_back(tx, 1) == 1
    assert credits_to_claw_back(tx, 0) == 0


@given(amount=st.integers(1, 10_000_000), credits=st.integers(1, 1_000_000), data=st.data())
def test_a_claw_back_is_the_exact_ceiling_of_the_refunded_share(amount: int, credits: int, data: st.DataObject) -> None:
    refunded = data.draw(st.integers(0, amount), label="refunded")
    tx = replace(transaction(), amount_cents=amount, credits=credits)
    taken = credits_to_claw_back(tx, refunded)
    assert taken == -(-credits * refunded // amount)  # integer ceiling, no float
    assert 0 <= taken <= credits
    assert taken * amount >= credits * refunded  # never leaves credits the money came back for
