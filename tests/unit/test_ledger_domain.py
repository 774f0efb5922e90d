"""Domain and application rules of the ledger, in memory. tests/integration/test_ledger_domain_postgres.py
runs the same suite on PostgreSQL, as eventsourcing's own examples run theirs on every backend."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.domain import Snapshot

from services.ledger import commands
from services.ledger.answers import answer
from services.ledger.application import Ledger, Outcome
from services.ledger.domain import CreditAccount
from services.ledger.values import AccountInactiveError, Hold, InvalidCommandError, Stamp
from tests.ledger_asks import ask

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def state(ledger: Ledger, user: str) -> CreditAccount:
    account = ledger.account(user)
    assert account is not None
    return account


def _funded(ledger: Ledger, amount: int) -> str:
    user = str(uuid.uuid4())
    cmd = ask(
        "grant", user, entry_type="PURCHASE", amount=amount, description="", metadata={}, key="seed", request_id=None
    )
    ledger.execute_batch([cmd])
    return user


def _debit(user: str, amount: int, key: str) -> commands.Command:
    return ask("debit", user, amount=amount, description="", metadata={}, key=key, request_id=None)


def test_a_debit_that_would_overdraw_is_refused_whole_and_its_retry_is_refused_the_same(ledger: Ledger) -> None:
    user = _funded(ledger, 5)
    first = answer(ledger.execute_batch([_debit(user, 6, "a")])[0])
    assert first.status == 402
    assert (first.body["balance"], first.body["available"], first.body["amount"]) == (5, 5, 6)
    ledger.execute_batch([_debit(user, 5, "b")])
    again = answer(ledger.execute_batch([_debit(user, 6, "a")])[0])
    assert (again.status, again.body, again.replayed) == (402, first.body, True)
    assert state(ledger, user).balance == 0


def test_one_batch_applies_its_commands_in_order_and_a_repeated_key_once(ledger: Ledger) -> None:
    user = _funded(ledger, 3)
    results = [
        answer(r) for r in ledger.execute_batch([_debit(user, 2, "x"), _debit(user, 2, "x"), _debit(user, 2, "y")])
    ]
    assert [r.status for r in results] == [201, 201, 402]
    assert results[0].body == results[1].body and results[1].replayed
    assert state(ledger, user).balance == 1


def _run(ledger: Ledger, command: commands.Command) -> Outcome:
    (result,) = ledger.execute_batch([command])
    assert isinstance(result, Outcome), result
    return result


def _status(user: str, key: str, *, active: bool, at: datetime) -> commands.SetStatus:
    return commands.SetStatus(user_id=user, key=key, active=active, at=at)


def test_a_claw_back_never_goes_below_zero_and_records_the_shortfall(ledger: Ledger) -> None:
    user = str(uuid.uuid4())
    paid: dict[str, Any] = {"user_id": user, "transaction_id": "t1", "credits": 50}
    _run(ledger, commands.Purchase(key="payment:t1", package_id="basic", amount_cents=999, **paid))
    ledger.execute_batch([_debit(user, 45, "spend")])
    event = _run(ledger, commands.Refund(key="refund:t1", stripe_charge_id=None, **paid)).event
    assert isinstance(event, CreditAccount.Debited)
    assert (event.entry_type, event.amount, event.shortfall, event.balance_after) == ("REFUND", 5, 45, 0)
    assert state(ledger, user).balance == 0


def test_a_refund_that_overtakes_its_purchase_leaves_the_purchase_ungranted(ledger: Ledger) -> None:
    user = str(uuid.uuid4())
    paid: dict[str, Any] = {"user_id": user, "transaction_id": "t2", "credits": 50}
    noted = _run(ledger, commands.Refund(key="refund:t2", stripe_charge_id=None, **paid)).event
    late = _run(ledger, commands.Purchase(key="payment:t2", package_id=None, amount_cents=999, **paid)).event
    assert isinstance(noted, CreditAccount.Noted) and isinstance(late, CreditAccount.Noted)
    assert state(ledger, user).balance == 0


def test_a_partial_capture_releases_the_rest_of_the_hold(ledger: Ledger) -> None:
    user = _funded(ledger, 10)
    hold = answer(
        ledger.execute_batch([ask("reserve", user, amount=4, ttl_seconds=60, now=T0, key="r", request_id=None)])[0]
    )
    assert (hold.status, hold.body["reserved"], hold.body["available"]) == (201, 4, 6)
    rid = hold.body["reservation_id"]
    done = answer(
        ledger.execute_batch(
            [ask("capture", user, reservation_id=rid, amount=3, description="", key="c", request_id=None)]
        )[0]
    )
    assert (done.status, done.body["captured"], done.body["released"], done.body["balance"]) == (200, 3, 1, 7)
    assert (done.body["reserved"], done.body["available"]) == (0, 7)
    gone = answer(
        ledger.execute_batch([ask("release", user, reservation_id=rid, reason="", key="z", request_id=None)])[0]
    )
    assert gone.status == 404


def test_a_deactivated_account_refuses_spending_but_still_takes_grants(ledger: Ledger) -> None:
    user = _funded(ledger, 10)
    _run(ledger, _status(user, "s1", active=False, at=T0))
    (refused,) = ledger.execute_batch([_debit(user, 1, "d")])
    assert isinstance(refused, AccountInactiveError) and answer(refused).status == 403
    hold = ask("reserve", user, amount=1, ttl_seconds=5, now=T0, key="r", request_id=None)
    assert answer(ledger.execute_batch([hold])[0]).status == 403
    grant = ask("grant", user, entry_type="BONUS", amount=1, description="", metadata={}, key="g", request_id=None)
    assert answer(ledger.execute_batch([grant])[0]).status == 201
    # The refusals left no trace, so the same keys work once the account is active again.
    _run(ledger, _status(user, "s2", active=True, at=T0 + timedelta(1)))
    assert answer(ledger.execute_batch([_debit(user, 1, "d")])[0]).status == 201


def test_an_older_status_change_arriving_late_changes_nothing(ledger: Ledger) -> None:
    user = _funded(ledger, 1)
    later, earlier = T0 + timedelta(minutes=5), T0
    _run(ledger, _status(user, "new", active=False, at=later))
    _run(ledger, _status(user, "old", active=True, at=earlier))
    assert state(ledger, user).active is False


def test_amounts_must_be_positive_integers() -> None:
    account = CreditAccount(user_id=str(uuid.uuid4()))
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidCommandError):
            account.grant(Stamp("k", "f"), entry_type="BONUS", amount=bad)  # type: ignore[arg-type]


def test_a_long_account_loads_from_its_snapshot(ledger: Ledger) -> None:
    user = _funded(ledger, 10_000)
    for start in range(0, 1000, 250):
        ledger.execute_batch([_debit(user, 1, f"d{i}") for i in range(start, start + 250)])
    assert ledger.snapshots is not None
    snapshots = list(ledger.snapshots.get(uuid.UUID(user), desc=True, limit=1))
    assert snapshots and snapshots[0].originator_version == 1000
    assert state(ledger, user).balance == 9000


def test_an_accounts_snapshot_does_not_grow_with_its_history(ledger: Ledger) -> None:
    user = _funded(ledger, 10_000)
    ledger.execute_batch([_debit(user, 1, f"a{i}") for i in range(10)])
    small = len(ledger.mapper.to_stored_event(Snapshot.take(state(ledger, user))).state)
    for batch in range(10):
        ledger.execute_batch([_debit(user, 1, f"b{batch}-{i}") for i in range(100)])
    account = ledger.account(user)
    assert account is not None and account.balance == 10_000 - 1_010
    large = len(ledger.mapper.to_stored_event(Snapshot.take(account)).state)
    # 1,000 more commands, yet the state to load is the same size: keys live in their own records.
    assert large <= small + 8
    # ...and every one of those keys still answers a retry with its first outcome.
    again = answer(ledger.execute_batch([_debit(user, 1, "a3")])[0])
    assert again.replayed and again.status == 201 and state(ledger, user).balance == 10_000 - 1_010


def _job_hold(user: str, job_id: str, cost: int) -> commands.HoldForJob:
    """What media's media.job.requested asks of the ledger (services/ledger/handlers.py)."""
    key = commands.job_key(job_id, "reserve")
    return commands.HoldForJob(
        user_id=user, key=key, reservation_id=commands.reservation_id(user, key), job_id=job_id, cost=cost,
        expires_at=T0 + timedelta(seconds=60),
    )  # fmt: skip


def test_a_media_jobs_hold_is_settled_by_its_job_and_by_no_caller(ledger: Ledger) -> None:
    user = _funded(ledger, 10)
    rid = answer(ledger.execute_batch([_job_hold(user, "job-1", 4)])[0]).body["reservation_id"]
    by_hand = [
        ask("capture", user, reservation_id=rid, amount=0, description="", key="c", request_id=None),
        ask("release", user, reservation_id=rid, reason="mine", key="r", request_id=None),
    ]
    for refused in map(answer, ledger.execute_batch(by_hand)):
        assert refused.status == 409
        assert "belongs to media job job-1 and is settled by it" in refused.body["detail"]
    assert (state(ledger, user).balance, state(ledger, user).reserved) == (10, 4)
    charge = commands.ChargeJob(user_id=user, key=commands.job_key("job-1", "capture"), job_id="job-1", cost=4,
                                operation="image.upload")  # fmt: skip
    captured = answer(ledger.execute_batch([charge])[0])
    assert (captured.status, captured.body["captured"]) == (200, 4)
    assert (state(ledger, user).balance, state(ledger, user).reserved) == (6, 0)


def test_an_open_hold_survives_a_snapshot_as_a_hold(ledger: Ledger) -> None:
    user = _funded(ledger, 10)
    rid = answer(ledger.execute_batch([_job_hold(user, "j", 4)])[0]).body["reservation_id"]
    ledger.take_snapshot(uuid.UUID(user))
    assert ledger.snapshots is not None
    assert [s.originator_version for s in ledger.snapshots.get(uuid.UUID(user))] == [3]
    account = ledger.account(user)
    assert account is not None and account.reservations == {rid: Hold(4, "j", T0 + timedelta(seconds=60), {"2": 4})}
    assert (account.reserved, account.available) == (4, 6)
    assert [(i, lot.remaining, lot.expires_at) for i, lot in account.lots.items()] == [("2", 10, None)]
