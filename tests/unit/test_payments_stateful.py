"""Stripe's word, read late, twice and out of order, against a plain reference model (hypothesis stateful).

The truth is one PaymentIntent whose history moves only as Stripe lets it. Every state it has ever
been in is kept, and any of them (stale or current, any number of times, in any order) is delivered
to domain.observe, as webhooks and their redeliveries do. The transaction must only move forward,
announce each outcome once, and rest where the highest-ranked outcome delivered puts it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from services.payments.domain import (
    RANK,
    Kind,
    PaymentState,
    Status,
    Transaction,
    credits_to_claw_back,
    observe,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PI = "pi_3TruthOfTheMachine"
# Statuses a PaymentIntent waits in before it is decided; Stripe may cancel it from any of them.
OPEN = ("requires_payment_method", "requires_confirmation", "requires_action", "processing")
FAILURES = st.sampled_from(["Your card was declined.", "Insufficient funds.", "card_declined", "Expired card."])


def reference(delivered: list[PaymentState]) -> Status:
    """Where the transaction must rest: the highest-ranked outcome among what was delivered."""
    return max([Status.PENDING, *(state.outcome for state in delivered)], key=RANK.__getitem__)


def first_of(delivered: list[PaymentState], outcome: Status) -> PaymentState | None:
    return next((state for state in delivered if state.outcome is outcome), None)


class PaymentMachine(RuleBasedStateMachine):
    tx: Transaction
    snapshots: list[PaymentState]  # every state the truth has had, oldest first; the last is the truth
    delivered: list[PaymentState]
    announced: list[Status]
    now: datetime
    charges: int

    @initialize(amount=st.integers(50, 100_000), credits=st.integers(1, 10_000), knows_intent=st.booleans())
    def a_checkout_creates_the_transaction_and_its_payment_intent(
        self, amount: int, credits: int, knows_intent: bool
    ) -> None:
        self.tx = Transaction(
            id="6f1c3a52-8f0e-4d8e-9a51-2f1f0c6b7a11",
            user_id="user-1",
            kind=Kind.CREDIT_PURCHASE,
            status=Status.PENDING,
            amount_cents=amount,
            currency="USD",
            credits=credits,
            description="a pack",
            package_id="pack",
            stripe_payment_intent_id=PI if knows_intent else None,
            metadata={},
            created_at=T0,
            updated_at=T0,
        )
        self.snapshots = [PaymentState(PI, "requires_payment_method", amount, "usd", transaction_id=self.tx.id)]
        self.delivered = []
        self.announced = []
        self.now = T0
        self.charges = 0

    # -- the truth, moving only as Stripe lets it ------------------------------------------------

    @property
    def truth(self) -> PaymentState:
        return self.snapshots[-1]

    def becomes(self, state: PaymentState) -> None:
        self.snapshots.append(state)

    def new_charge(self) -> str:
        self.charges += 1
        return f"ch_{self.charges}"

    @precondition(lambda self: self.truth.status in ("requires_payment_method", "requires_action"))
    @rule(status=st.sampled_from(["requires_confirmation", "requires_action", "processing"]))
    def the_customer_confirms_and_stripe_has_not_decided_yet(self, status: str) -> None:
        self.becomes(replace(self.truth, status=status, failure=None))  # a new attempt clears the last error

    @precondition(lambda self: self.truth.status in OPEN)
    @rule(failure=FAILURES)
    def an_attempt_fails(self, failure: str) -> None:
        charge = self.new_charge()
        self.becomes(replace(self.truth, status="requires_payment_method", failure=failure, charge_id=charge))

    @precondition(lambda self: self.truth.status in OPEN)
    @rule()
    def an_attempt_succeeds(self) -> None:
        self.becomes(replace(self.truth, status="succeeded", failure=None, charge_id=self.new_charge()))

    @precondition(lambda self: self.truth.status in OPEN)
    @rule(keeps_error=st.booleans())
    def the_payment_intent_is_canceled(self, keeps_error: bool) -> None:
        self.becomes(replace(self.truth, status="canceled", failure=self.truth.failure if keeps_error else None))

    @precondition(lambda self: self.truth.status == "succeeded" and self.truth.amount_refunded < self.truth.amount)
    @rule(data=st.data())
    def some_of_the_payment_is_refunded(self, data: st.DataObject) -> None:
        more = data.draw(st.integers(1, self.truth.amount - self.truth.amount_refunded), label="refunded")
        refunded = self.truth.amount_refunded + more
        self.becomes(replace(self.truth, amount_refunded=refunded, refund_id=f"re_{len(self.snapshots)}"))

    # -- observations of it, stale or current ----------------------------------------------------

    def deliver(self, state: PaymentState) -> None:
        self.now += timedelta(seconds=1)
        before = self.tx
        change = observe(before, state, self.now, reason="requested_by_customer")
        assert change.refused is None, change.refused
        assert change.previous is before.status
        assert RANK[change.transaction.status] >= RANK[before.status], (before.status, change.transaction.status)
        if change.changed:
            assert change.transaction.status is change.announced[-1]
            assert change.transaction.updated_at == self.now
            assert change.transaction.stripe_payment_intent_id == PI
        else:
            assert change.transaction is before
        self.tx = change.transaction
        self.delivered.append(state)
        self.announced.extend(change.announced)

    @rule(data=st.data())
    def a_webhook_leads_to_any_state_ever_seen(self, data: st.DataObject) -> None:
        self.deliver(data.draw(st.sampled_from(self.snapshots), label="snapshot"))

    @rule(data=st.data())
    def redeliveries_arrive_in_any_order(self, data: st.DataObject) -> None:
        for state in data.draw(st.lists(st.sampled_from(self.snapshots), min_size=1, max_size=5), label="batch"):
            self.deliver(state)

    @rule()
    def stripe_is_read_now(self) -> None:
        self.deliver(self.truth)
        self.the_transaction_agrees_with_stripes_latest_word(self.tx)

    def the_transaction_agrees_with_stripes_latest_word(self, tx: Transaction) -> None:
        """Once the current truth was delivered, a decided payment is what Stripe says it is."""
        if self.truth.status in ("succeeded", "canceled"):
            assert tx.status is self.truth.outcome, (tx.status, self.truth)
        else:  # undecided now: a failure seen earlier stands, nothing else could have been seen
            assert tx.status in (Status.PENDING, Status.FAILED)
        assert tx.status is reference([*self.delivered, self.truth])

    # -- what must hold after every step ---------------------------------------------------------

    @invariant()
    def reading_stripe_now_would_leave_the_transaction_where_stripe_puts_it(self) -> None:
        """The final check, made after every step without applying it (a teardown that asserts would hide
        the failure of the step before it)."""
        read = observe(self.tx, self.truth, self.now + timedelta(seconds=1))
        assert read.refused is None
        self.the_transaction_agrees_with_stripes_latest_word(read.transaction)

    @invariant()
    def the_transaction_rests_where_the_highest_outcome_delivered_puts_it(self) -> None:
        assert self.tx.status is reference(self.delivered)

    @invariant()
    def each_outcome_is_announced_at_most_once_and_every_move_was_announced(self) -> None:
        assert len(set(self.announced)) == len(self.announced), self.announced
        assert self.tx.status is Status.PENDING or self.tx.status in self.announced

    @invariant()
    def completed_is_announced_exactly_when_the_money_was_taken(self) -> None:
        assert (Status.COMPLETED in self.announced) == (self.tx.status in (Status.COMPLETED, Status.REFUNDED))

    @invariant()
    def refunded_is_announced_only_with_or_after_completed(self) -> None:
        if Status.REFUNDED in self.announced:
            assert Status.COMPLETED in self.announced
            assert self.announced.index(Status.COMPLETED) < self.announced.index(Status.REFUNDED)
        assert (Status.REFUNDED in self.announced) == (self.tx.status is Status.REFUNDED)

    @invariant()
    def failed_and_cancelled_are_never_announced_after_completed(self) -> None:
        if Status.COMPLETED in self.announced:
            done = self.announced.index(Status.COMPLETED)
            assert Status.FAILED not in self.announced[done:]
            assert Status.CANCELLED not in self.announced
        assert not (Status.COMPLETED in self.announced and Status.CANCELLED in self.announced)

    @invariant()
    def the_first_failure_and_the_first_refund_delivered_are_the_ones_kept(self) -> None:
        failed = first_of(self.delivered, Status.FAILED)
        if self.tx.status in (Status.COMPLETED, Status.REFUNDED):
            assert "failure" not in self.tx.metadata  # a decline before the payment went through explains nothing
        elif Status.FAILED in self.announced:
            assert failed is not None and self.tx.metadata["failure"] == failed.failure
        refund = first_of(self.delivered, Status.REFUNDED)
        if refund is None:
            assert "refund" not in self.tx.metadata
        else:  # one claw-back per transaction: a later, bigger refund changes nothing
            assert self.tx.metadata["refund"] == {
                "refund_id": refund.refund_id,
                "amount_cents": refund.amount_refunded,
                "credits": credits_to_claw_back(self.tx, refund.amount_refunded),
                "reason": "requested_by_customer",
                "charge_id": refund.charge_id,
            }
            assert 1 <= self.tx.credits_clawed_back <= self.tx.credits


TestPaymentsAgainstModel = PaymentMachine.TestCase
TestPaymentsAgainstModel.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
