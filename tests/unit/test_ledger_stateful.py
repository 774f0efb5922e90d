"""Random sequences of ledger commands against a plain reference model (hypothesis stateful).

Runs the real command path (command builders, batched execute, answers) on the in-memory event
store; after every step the account, its entry list and the invariants must match the model.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.ledger import commands
from services.ledger.answers import Answer, answer, entry, is_entry
from services.ledger.application import Command, Ledger
from services.ledger.domain import IdempotencyConflictError
from services.ledger.sweeper import expire

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.user = str(uuid.uuid4())
        self.now = T0
        self.balance = 0
        self.holds: dict[str, tuple[int, datetime]] = {}
        self.entries: list[tuple[str, int, int]] = []
        self.sent: list[tuple[Command, Answer, Command]] = []  # (command, first answer, same key other request)
        self.keys = 0
        self.run(commands.grant, 201, entry_type="BONUS", amount=10, description="", metadata={})
        self.entries.append(("BONUS", 10, 10))
        self.balance = 10

    @property
    def reserved(self) -> int:
        return sum(amount for amount, _ in self.holds.values())

    def key(self) -> str:
        self.keys += 1
        return f"k{self.keys}"

    def run(self, build: Any, status: int | None = None, **fields: Any) -> Answer:
        key = self.key()
        command = build(self.user, key=key, request_id=None, **fields)
        result = answer(self.ledger.execute_batch([command])[0])
        if status is not None:
            assert result.status == status, (result, status)
        other = dict(fields)
        if "ttl_seconds" in other:
            other["ttl_seconds"] += 1
        else:
            other["description" if "description" in other else "reason"] = "something else"
        self.sent.append((command, result, build(self.user, key=key, request_id=None, **other)))
        return result

    @rule(amount=st.integers(1, 40), kind=st.sampled_from(["PURCHASE", "BONUS", "REFUND", "ADMIN_ADJUSTMENT"]))
    def grant(self, amount: int, kind: str) -> None:
        self.run(commands.grant, 201, entry_type=kind, amount=amount, description="", metadata={})
        self.balance += amount
        self.entries.append((kind, amount, self.balance))

    @rule(amount=st.integers(1, 50))
    def debit(self, amount: int) -> None:
        ok = amount <= self.balance - self.reserved
        result = self.run(commands.debit, 201 if ok else 402, amount=amount, description="", metadata={})
        if ok:
            self.balance -= amount
            self.entries.append(("USAGE", -amount, self.balance))
        else:
            assert (result.body["balance"], result.body["available"]) == (self.balance, self.balance - self.reserved)

    @rule(amount=st.integers(1, 30), ttl=st.integers(1, 120))
    def reserve(self, amount: int, ttl: int) -> None:
        ok = amount <= self.balance - self.reserved
        status = 201 if ok else 402
        result = self.run(commands.reserve, status, amount=amount, job_id=None, ttl_seconds=ttl, now=self.now)
        if ok:
            self.holds[result.body["reservation_id"]] = (amount, self.now + timedelta(seconds=ttl))

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), whole=st.booleans())
    def capture(self, data: st.DataObject, whole: bool) -> None:
        rid = data.draw(st.sampled_from(list(self.holds)))  # insertion order: ids are random
        held = self.holds[rid][0]
        amount = None if whole else data.draw(st.integers(0, held))
        result = self.run(commands.capture, 200, reservation_id=rid, amount=amount, description="")
        taken = held if amount is None else amount
        assert (result.body["captured"], result.body["released"]) == (taken, held - taken)
        del self.holds[rid]
        self.balance -= taken
        if taken:
            self.entries.append(("USAGE", -taken, self.balance))

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(list(self.holds)))  # insertion order: ids are random
        self.run(commands.release, 200, reservation_id=rid, reason="job failed")
        del self.holds[rid]

    @rule(seconds=st.integers(1, 90))
    def time_passes_and_the_sweeper_runs(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        for rid, (_, expires_at) in sorted(self.holds.items()):
            if expires_at <= self.now:
                result = answer(self.ledger.execute_batch([expire(self.user, rid, self.now)])[0])
                assert (result.status, result.body["reason"]) == (200, "expired")
                del self.holds[rid]
                # A second sweeper (another instance) finds the work done: nothing changes.
                again = self.ledger.execute_batch([expire(self.user, rid, self.now)])[0]
                assert answer(again).body == result.body

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def a_retry_gets_the_first_answer(self, data: st.DataObject) -> None:
        command, first, _ = data.draw(st.sampled_from(self.sent))
        again = answer(self.ledger.execute_batch([command])[0])
        assert (again.status, again.body, again.replayed) == (first.status, first.body, True)

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def the_same_key_for_another_request_conflicts(self, data: st.DataObject) -> None:
        _, _, other = data.draw(st.sampled_from(self.sent))
        result = self.ledger.execute_batch([other])[0]
        assert isinstance(result, IdempotencyConflictError)
        assert answer(result).status == 409

    @invariant()
    def the_account_matches_the_model(self) -> None:
        account = self.ledger.account(self.user)
        assert account is not None
        assert (account.balance, account.reserved) == (self.balance, self.reserved)
        assert account.balance >= 0 and account.available >= 0
        assert set(account.reservations) == set(self.holds)
        events, _ = self.ledger.history(self.user, before=None, limit=10_000, keep=is_entry)
        log = [(e["type"], e["amount"], e["balance_after"]) for e in map(entry, reversed(events))]
        assert log == self.entries


TestLedgerAgainstModel = LedgerMachine.TestCase
TestLedgerAgainstModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
