"""Random sequences of ledger commands against a plain reference model (hypothesis stateful).

Runs the real command path (command builders, batched execute, answers) on the in-memory event
store; after every step the account, its entry list, its lots and the invariants must match the
model. The model keeps credit as lots with an expiry, spends soonest-expiring first (non-expiring
last, older first among equals), lets holds keep the lots they drew on, and lets time pass: a lot
expires when it is due and no hold draws on it, once.
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
from services.ledger.commands import Expire, ExpireLot, expire_key, expire_lot_key
from services.ledger.values import IdempotencyConflictError, InvalidCommandError
from tests.ledger_asks import ask

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NEVER = datetime.max.replace(tzinfo=UTC)


class ModelLot:
    def __init__(self, lot_id: str, amount: int, expires_at: datetime | None, source: str) -> None:
        self.id, self.amount, self.remaining, self.expires_at, self.source = lot_id, amount, amount, expires_at, source

    def order(self) -> tuple[bool, datetime, int]:
        return (self.expires_at is None, self.expires_at or NEVER, int(self.id))


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.user = str(uuid.uuid4())
        self.now = T0
        self.balance = 0
        # reservation id → (amount, expires_at, what it set aside from each lot)
        self.holds: dict[str, tuple[int, datetime, dict[str, int]]] = {}
        self.lots: dict[str, ModelLot] = {}
        self.purchases: dict[str, int] = {}  # transaction → credits, until refunded
        self.entries: list[tuple[str, int, int]] = []
        self.sent: list[tuple[Command, Answer, Command]] = []  # (command, first answer, same key other request)
        self.keys = 0
        self.grant(10, "BONUS", None)

    @property
    def reserved(self) -> int:
        return sum(amount for amount, _, _ in self.holds.values())

    def held(self, lot_id: str) -> int:
        return sum(parts.get(lot_id, 0) for _, _, parts in self.holds.values())

    def take(self, amount: int, available: dict[str, int]) -> dict[str, int]:
        """`amount` from `available` (credits by lot) in spending order."""
        taken: dict[str, int] = {}
        for lot_id in sorted(available, key=lambda i: self.lots[i].order()):
            part = min(amount, available[lot_id])
            if part > 0:
                taken[lot_id], amount = part, amount - part
        assert amount == 0
        return taken

    def free(self) -> dict[str, int]:
        return {i: lot.remaining - self.held(i) for i, lot in self.lots.items()}

    def spend(self, parts: dict[str, int]) -> None:
        for lot_id, part in parts.items():
            self.lots[lot_id].remaining -= part
            if self.lots[lot_id].remaining == 0 and not self.held(lot_id):
                del self.lots[lot_id]

    def new_lot(self, result: Answer, amount: int, expires_at: datetime | None) -> None:
        lot_id = str(result.body["version"])
        self.lots[lot_id] = ModelLot(lot_id, amount, expires_at, "")

    def key(self) -> str:
        self.keys += 1
        return f"k{self.keys}"

    def run(self, operation: str, status: int | None = None, **fields: Any) -> Answer:
        key = self.key()
        command = ask(operation, self.user, key, **fields)
        result = answer(self.ledger.execute_batch([command])[0])
        if status is not None:
            assert result.status == status, (result, status)
        other = dict(fields)
        if "ttl_seconds" in other:
            other["ttl_seconds"] += 1
        else:
            other["description" if "description" in other else "reason"] = "something else"
        self.sent.append((command, result, ask(operation, self.user, key, **other)))
        return result

    @rule(
        amount=st.integers(1, 40),
        kind=st.sampled_from(["PURCHASE", "BONUS", "REFUND", "ADMIN_ADJUSTMENT"]),
        lifetime=st.none() | st.integers(1, 200),
    )
    def grant(self, amount: int, kind: str, lifetime: int | None) -> None:
        expires_at = self.now + timedelta(seconds=lifetime) if lifetime is not None else None
        result = self.run(
            "grant", 201, entry_type=kind, amount=amount, description="", metadata={}, expires_at=expires_at
        )
        self.new_lot(result, amount, expires_at)
        self.balance += amount
        self.entries.append((kind, amount, self.balance))

    @rule(credits=st.integers(1, 60))
    def a_purchase_is_granted(self, credits: int) -> None:
        tx = f"tx-{self.key()}"
        key = commands.payment_key(tx)
        paid = commands.Purchase(
            user_id=self.user, key=key, transaction_id=tx, credits=credits, package_id=None, amount_cents=100
        )
        result = answer(self.ledger.execute_batch([paid])[0])
        assert result.status == 201
        self.new_lot(result, credits, None)
        self.lots[str(result.body["version"])].source = key
        self.purchases[tx] = credits
        self.balance += credits
        self.entries.append(("PURCHASE", credits, self.balance))

    @precondition(lambda self: self.purchases)
    @rule(data=st.data())
    def a_refund_claws_back_from_the_lot_it_bought(self, data: st.DataObject) -> None:
        tx = data.draw(st.sampled_from(sorted(self.purchases)))
        credits = self.purchases.pop(tx)
        refund = commands.Refund(
            user_id=self.user, key=commands.refund_key(tx), transaction_id=tx, credits=credits, stripe_charge_id=None
        )
        result = answer(self.ledger.execute_batch([refund])[0])
        lot = next((i for i, lot in self.lots.items() if lot.source == commands.payment_key(tx)), None)
        taken = min(credits, self.free()[lot]) if lot is not None else 0
        assert (result.status, -result.body["amount"], result.body["shortfall"]) == (201, taken, credits - taken)
        if lot is not None and taken:
            self.spend({lot: taken})
        self.balance -= taken
        self.entries.append(("REFUND", -taken, self.balance))

    @rule(amount=st.integers(1, 50))
    def debit(self, amount: int) -> None:
        ok = amount <= self.balance - self.reserved
        result = self.run("debit", 201 if ok else 402, amount=amount, description="", metadata={})
        if ok:
            self.spend(self.take(amount, self.free()))
            self.balance -= amount
            self.entries.append(("USAGE", -amount, self.balance))
        else:
            assert (result.body["balance"], result.body["available"]) == (self.balance, self.balance - self.reserved)

    @rule(amount=st.integers(1, 30), ttl=st.integers(1, 120))
    def reserve(self, amount: int, ttl: int) -> None:
        ok = amount <= self.balance - self.reserved
        status = 201 if ok else 402
        result = self.run("reserve", status, amount=amount, ttl_seconds=ttl, now=self.now)
        if ok:
            parts = self.take(amount, self.free())
            self.holds[result.body["reservation_id"]] = (amount, self.now + timedelta(seconds=ttl), parts)

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), whole=st.booleans())
    def capture(self, data: st.DataObject, whole: bool) -> None:
        rid = data.draw(st.sampled_from(list(self.holds)))  # insertion order: ids are random
        held, _, parts = self.holds[rid]
        amount = None if whole else data.draw(st.integers(0, held))
        result = self.run("capture", 200, reservation_id=rid, amount=amount, description="")
        taken = held if amount is None else amount
        assert (result.body["captured"], result.body["released"]) == (taken, held - taken)
        del self.holds[rid]
        self.spend(self.take(taken, parts))
        self.balance -= taken
        if taken:
            self.entries.append(("USAGE", -taken, self.balance))

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(list(self.holds)))  # insertion order: ids are random
        self.run("release", 200, reservation_id=rid, reason="job failed")
        del self.holds[rid]
        self.spend({})

    @rule(seconds=st.integers(1, 90))
    def time_passes_and_the_sweeper_runs(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        for rid, (_, expires_at, _) in sorted(self.holds.items()):
            if expires_at <= self.now:
                result = answer(
                    self.ledger.execute_batch(
                        [Expire(user_id=self.user, key=expire_key(rid), reservation_id=rid, now=self.now)]
                    )[0]
                )
                assert (result.status, result.body["reason"]) == (200, "expired")
                del self.holds[rid]
                # A second sweeper (another instance) finds the work done: nothing changes.
                again = self.ledger.execute_batch(
                    [Expire(user_id=self.user, key=expire_key(rid), reservation_id=rid, now=self.now)]
                )[0]
                assert answer(again).body == result.body
        for lot_id, lot in sorted(self.lots.items()):
            outcome = self.ledger.execute_batch(
                [ExpireLot(user_id=self.user, key=expire_lot_key(lot_id), lot_id=lot_id, now=self.now)]
            )[0]
            if lot.expires_at is None or lot.expires_at > self.now or self.held(lot_id):
                assert isinstance(outcome, InvalidCommandError)  # not early, and never what a hold keeps
                continue
            first = answer(outcome)
            assert (first.status, first.body["type"], first.body["amount"]) == (201, "EXPIRED", -lot.remaining)
            self.balance -= lot.remaining
            self.entries.append(("EXPIRED", -lot.remaining, self.balance))
            del self.lots[lot_id]
            # A second sweeper asks again: the same answer, nothing expires twice.
            repeat = answer(
                self.ledger.execute_batch(
                    [ExpireLot(user_id=self.user, key=expire_lot_key(lot_id), lot_id=lot_id, now=self.now)]
                )[0]
            )
            assert (repeat.body, repeat.replayed) == (first.body, True)

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
        assert {r: h.lots for r, h in account.reservations.items()} == {r: p for r, (_, _, p) in self.holds.items()}
        lots = {i: (lot.amount, lot.remaining, lot.expires_at) for i, lot in account.lots.items()}
        assert lots == {i: (lot.amount, lot.remaining, lot.expires_at) for i, lot in self.lots.items()}
        assert all(lot.remaining >= 0 and account.held(i) <= lot.remaining for i, lot in account.lots.items())
        assert account.balance == sum(lot.remaining for lot in account.lots.values())
        events, _ = self.ledger.history(self.user, before=None, limit=10_000, keep=is_entry)
        log = [(e["type"], e["amount"], e["balance_after"]) for e in map(entry, reversed(events))]
        assert log == self.entries


TestLedgerAgainstModel = LedgerMachine.TestCase
TestLedgerAgainstModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
