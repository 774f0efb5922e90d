"""What was written stays readable: every envelope version and every kind of stored ledger event, as
tests/contract/golden/ keeps them (tests/contract/golden.py wrote them; nothing rewrites them), reads with
this code. A change that breaks reading them (a field renamed or made required without a new version and its
upcast) fails here."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from eventsourcing.persistence import StoredEvent

from services.ledger import events
from services.ledger.answers import to_contract
from shared.contracts import Envelope, EventData
from shared.contracts import payments as pc
from tests.contract import golden

BUS_FILES = sorted(golden.BUS.glob("*.json"))


def test_every_contract_at_its_version_and_every_kind_of_ledger_event_has_a_golden_form() -> None:
    missing = [golden.bus_file(s, m.schema_version).name for s, m in EventData.registry.items()
               if not golden.bus_file(s, m.schema_version).exists()]  # fmt: skip
    assert not missing, f"no golden form for {missing}: run `python -m tests.contract.golden` and commit it"
    uncovered = golden.stored_kinds() - golden.covered_kinds()
    assert not uncovered, f"no stored history holds {uncovered}: run `python -m tests.contract.golden`"


@pytest.mark.parametrize("path", BUS_FILES, ids=[p.stem for p in BUS_FILES])
def test_each_written_envelope_still_reads(path: Path) -> None:
    written = json.loads(path.read_text())
    envelope = Envelope.from_bytes(path.read_bytes())
    body = envelope.body()
    model = EventData.registry[envelope.type]
    assert isinstance(body, model)
    if envelope.schema_version == model.schema_version:  # the current version: every field as it was written
        read = body.model_dump(mode="json")
        assert {name: read[name] for name in written["data"]} == written["data"]
        # and a field added since (optional, as the rule for a version's additions is) as its absence meant
        added = {name: value for name, value in read.items() if name not in written["data"]}
        assert added == {name: model.model_fields[name].get_default() for name in added}


def test_a_version_1_refund_reads_as_version_2_with_its_amounts_in_their_own_fields() -> None:
    body = Envelope.from_bytes(golden.bus_file("payments.payment.refunded", 1).read_bytes()).body()
    assert isinstance(body, pc.PaymentRefunded)
    assert (body.refunded_cents, body.credits_clawed_back, body.stripe_charge_id) == (300, 16, "ch_3QhX2LJq8cBd0a1b")
    # What the ledger makes of it: the claw-back of those 16 credits.
    current = Envelope.wrap(body, user_id=body.user_id)
    assert current.schema_version == 2 and current.data["credits_clawed_back"] == 16
    assert "credits" not in current.data and "amount_cents" not in current.data


def test_a_newer_version_is_read_as_it_is_when_what_this_code_needs_is_there() -> None:
    written = json.loads(golden.bus_file("payments.payment.refunded", 2).read_text())
    newer = {**written, "schema_version": 3, "data": {**written["data"], "refund_reason": "asked"}}
    body = Envelope.model_validate(newer).body()
    assert isinstance(body, pc.PaymentRefunded) and body.refunded_cents == written["data"]["refunded_cents"]


@pytest.mark.parametrize("path", golden.histories(), ids=[p.stem for p in golden.histories()])
def test_each_stored_ledger_history_replays_to_the_account_it_made(path: Path) -> None:
    kept = json.loads(path.read_text())
    ledger = golden.in_memory()
    user = uuid.UUID(kept["user_id"])
    ledger.recorder.insert_events(
        [StoredEvent(user, e["version"], e["topic"], e["state"].encode()) for e in kept["events"]]
    )
    account = ledger.account(kept["user_id"])
    assert account is not None and golden.account_view(account) == kept["account"]
    for event in ledger.repository.event_store.get(user):
        if isinstance(event, events.Stamped | events.Keyed):
            to_contract(event)  # each still becomes what the relay publishes (or None: not published)
