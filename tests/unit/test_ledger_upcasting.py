"""Events and snapshots stored before a field was added read back as if they had it (events.Upcast): the
history an older version of the ledger wrote is the same history to this one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import resolve_topic

from services.ledger import events
from services.ledger.answers import answer, to_contract
from services.ledger.application import Ledger
from services.ledger.domain import CreditAccount
from shared.contracts import ledger as contracts
from tests.ledger_asks import ask

SOON = datetime.now(UTC) + timedelta(days=3)


def added(topic: str) -> set[str]:
    """The fields the event class of `topic` gained after it was first stored (its `ADDED`, all the way up)."""
    cls = resolve_topic(topic)
    return {name for klass in cls.__mro__ for name in vars(klass).get("ADDED", {})}


def in_memory() -> Ledger:
    return Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def as_written_before(ledger: Ledger, user: str) -> Ledger:
    """The account's history as the version before versions wrote it (no `class_version`, none of the fields
    added since), in a ledger of its own."""
    older = in_memory()
    stored = []
    for item in ledger.recorder.select_events(uuid.UUID(user)):
        state: dict[str, Any] = ledger.mapper.transcoder.decode(item.state)
        for name in {"class_version", *added(item.topic)}:
            state.pop(name, None)
        stored.append(StoredEvent(item.originator_id, item.originator_version, item.topic,
                                  ledger.mapper.transcoder.encode(state)))  # fmt: skip
    older.recorder.insert_events(stored)
    return older


def test_events_stored_before_their_newer_fields_replay_to_the_same_balance() -> None:
    ledger, user = in_memory(), str(uuid.uuid4())
    now = datetime.now(UTC)
    ledger.execute_batch([ask("grant", user, "g", entry_type="PURCHASE", amount=10, expires_at=SOON)])
    ledger.execute_batch([ask("debit", user, "d", amount=3)])
    held = answer(ledger.execute_batch([ask("reserve", user, "r", amount=4, ttl_seconds=60, now=now)])[0])
    rid = held.body["reservation_id"]
    ledger.execute_batch([ask("capture", user, "c", reservation_id=rid, amount=2)])

    older = as_written_before(ledger, user).account(user)

    assert older is not None
    assert (older.balance, older.reserved, older.available) == (5, 0, 5)
    [lot] = older.lots.values()
    assert (lot.amount, lot.remaining, lot.expires_at) == (10, 5, None)  # before lots, grants never expired
    assert (older.recharge_threshold, older.recharge_at) == (None, None)


def test_an_older_event_still_becomes_its_contract() -> None:
    ledger, user = in_memory(), str(uuid.uuid4())
    ledger.execute_batch([ask("grant", user, "g", entry_type="BONUS", amount=10)])
    older = as_written_before(ledger, user)
    [_opened, granted] = list(older.repository.event_store.get(uuid.UUID(user)))

    assert isinstance(granted, CreditAccount.Granted) and isinstance(granted, events.Stamped)
    assert (granted.traceparent, granted.correlation_id, granted.reserved_after, granted.expires_at) == (
        None,
        None,
        None,
        None,
    )
    contract = to_contract(granted)
    assert isinstance(contract, contracts.CreditsGranted)
    assert (contract.amount, contract.balance_after, contract.available_after, contract.expires_at) == (
        10,
        10,
        None,  # what the older event did not record is not made up
        None,
    )


def test_a_snapshot_taken_before_auto_recharge_reads_back_watching_no_threshold() -> None:
    ledger, user = in_memory(), str(uuid.uuid4())
    ledger.execute_batch([ask("grant", user, "g", entry_type="BONUS", amount=7)])
    ledger.take_snapshot(uuid.UUID(user))
    assert ledger.snapshots is not None
    [snapshot] = ledger.snapshots.recorder.select_events(uuid.UUID(user))
    state: dict[str, Any] = ledger.mapper.transcoder.decode(snapshot.state)
    for name in ("class_version", "recharge_threshold", "recharge_at"):
        state["state"].pop(name, None)
    older = in_memory()
    older.recorder.insert_events(list(ledger.recorder.select_events(uuid.UUID(user))))
    assert older.snapshots is not None
    encoded = ledger.mapper.transcoder.encode(state)
    older.snapshots.recorder.insert_events(
        [StoredEvent(snapshot.originator_id, snapshot.originator_version, snapshot.topic, encoded)]
    )

    account = older.account(user)

    assert account is not None
    assert (account.balance, account.recharge_threshold, account.recharge_at) == (7, None, None)


def test_a_version_2_snapshot_from_before_organizations_reads_back_with_no_members_of_its_own() -> None:
    ledger, user = in_memory(), str(uuid.uuid4())
    ledger.execute_batch([ask("grant", user, "g", entry_type="BONUS", amount=7)])
    ledger.take_snapshot(uuid.UUID(user))
    assert ledger.snapshots is not None
    [snapshot] = ledger.snapshots.recorder.select_events(uuid.UUID(user))
    state: dict[str, Any] = ledger.mapper.transcoder.decode(snapshot.state)
    state["state"].pop("members")
    state["state"]["class_version"] = 2
    older = in_memory()
    older.recorder.insert_events(list(ledger.recorder.select_events(uuid.UUID(user))))
    assert older.snapshots is not None
    encoded = ledger.mapper.transcoder.encode(state)
    older.snapshots.recorder.insert_events(
        [StoredEvent(snapshot.originator_id, snapshot.originator_version, snapshot.topic, encoded)]
    )
    first, second = older.account(user), older.account(user)
    assert first is not None and second is not None and first.members == {}
    first.members["someone"] = None  # type: ignore[assignment]
    assert second.members == {}, "two accounts read from old snapshots share one dict of members"
