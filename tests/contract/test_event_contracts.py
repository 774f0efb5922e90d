"""Every event in SPEC.md's table has a typed contract that round-trips through the envelope;
consumers tolerate fields they do not know and reject events missing fields they need."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args, get_origin

import pytest
from pydantic import ValidationError

from shared.bus.streams import STREAMS, stream_of
from shared.contracts import Envelope, EventData, UnknownEventError
from shared.contracts import ledger as lc

SPEC_SUBJECTS = {
    "identity.user.registered", "identity.user.updated", "identity.user.deactivated", "identity.user.reactivated",
    "ledger.credits.granted", "ledger.credits.debited", "ledger.credits.reserved", "ledger.credits.captured",
    "ledger.credits.released", "ledger.credits.reservation_rejected", "ledger.debit.rejected",
    "payments.payment.succeeded", "payments.payment.failed", "payments.payment.cancelled",
    "payments.payment.refunded", "payments.subscription.renewed", "ledger.credits.expired",
    "ledger.balance.low", "ledger.credits.expiring", "payments.autorecharge.succeeded", "payments.autorecharge.failed",
    "payments.subscription.past_due", "payments.subscription.cancelled",
    "media.job.requested", "media.job.completed", "media.job.failed",
}  # fmt: skip

SAMPLES: dict[type, Any] = {
    str: "x",
    bool: True,
    int: 3,
    datetime: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    dict: {"k": "v"},
}


def _mapping(annotation: Any) -> dict[str, Any]:
    """A one-entry mapping whose value has the mapping's value type (an int for lot portions)."""
    value = get_args(annotation)[1] if len(get_args(annotation)) == 2 else Any
    base = get_args(value)[0] if get_origin(value) is Annotated else value
    return {"k": SAMPLES.get(base, "v")}


def sample(model: type[EventData]) -> EventData:
    """A valid instance built from the model's own field types."""
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if name == "entry_type":
            values[name] = "BONUS"
        elif get_origin(annotation) is Literal:
            values[name] = get_args(annotation)[0]
        elif annotation in SAMPLES:
            values[name] = SAMPLES[annotation]
        elif get_origin(annotation) is dict:
            values[name] = _mapping(annotation)
        else:  # optional fields: give them a value too, so the round trip covers them
            args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
            values[name] = (
                (_mapping(args[0]) if get_origin(args[0]) is dict else SAMPLES.get(args[0], "x")) if args else None
            )
    return model.model_validate(values)


def test_every_subject_in_the_spec_has_a_contract() -> None:
    assert set(EventData.registry) >= SPEC_SUBJECTS


@pytest.mark.parametrize("subject", sorted(EventData.registry))
def test_each_contract_round_trips_through_the_envelope(subject: str) -> None:
    body = sample(EventData.registry[subject])
    envelope = Envelope.wrap(body, user_id="u1", causation_id="c1")

    received = Envelope.from_bytes(envelope.to_bytes())

    assert received == envelope
    assert received.body() == body
    assert received.type == subject
    assert received.schema_version == type(body).schema_version


@pytest.mark.parametrize("subject", sorted(EventData.registry))
def test_unknown_fields_are_tolerated_and_missing_ones_rejected(subject: str) -> None:
    model = EventData.registry[subject]
    data = sample(model).model_dump(mode="json")
    newer = {**data, "added_in_a_later_version": True}
    assert model.model_validate(newer) == model.model_validate(data)

    required = [name for name, field in model.model_fields.items() if field.is_required()]
    assert required, f"{subject} has no required field"
    with pytest.raises(ValidationError):
        model.model_validate({k: v for k, v in data.items() if k != required[0]})


def test_an_envelope_missing_a_field_is_rejected_and_an_unknown_type_is_named() -> None:
    raw = json.loads(Envelope.wrap(sample(EventData.registry["identity.user.reactivated"]), user_id="u").to_bytes())
    with pytest.raises(ValidationError):
        Envelope.model_validate({k: v for k, v in raw.items() if k != "correlation_id"})
    with pytest.raises(UnknownEventError):
        Envelope.model_validate({**raw, "type": "identity.user.teleported"}).body()


def test_a_wrapped_event_starts_its_own_correlation_unless_given_one() -> None:
    body = sample(EventData.registry["identity.user.reactivated"])
    alone = Envelope.wrap(body, user_id="u")
    assert alone.correlation_id == str(alone.id)
    caused = Envelope.wrap(body, user_id="u", correlation_id="corr", causation_id=str(uuid.uuid4()))
    assert caused.correlation_id == "corr"


def test_a_credit_log_line_is_said_once_for_every_reader() -> None:
    """shared/contracts/ledger.credit_entry is what the ledger answers and what projections store."""
    common: dict[str, Any] = {"user_id": "u", "idempotency_key": "k", "cause_id": None}
    granted = lc.CreditsGranted(**common, entry_type=lc.EntryType.BONUS, amount=10, balance_after=10,
                                description="hi", metadata={"a": 1})  # fmt: skip
    captured = lc.CreditsCaptured(**common, reservation_id="r", job_id="j", amount=3, released=1, balance_after=7,
                                  reserved_after=0, description="resize")  # fmt: skip
    nothing = captured.model_copy(update={"amount": 0})
    assert lc.credit_entry(granted) == lc.CreditEntry(lc.EntryType.BONUS, 10, 10, "hi", {"a": 1})
    assert lc.credit_entry(captured) == lc.CreditEntry(
        lc.EntryType.USAGE, -3, 7, "resize", {"reservation_id": "r", "job_id": "j"}
    )
    assert lc.credit_entry(nothing) is None


@pytest.mark.parametrize("subject", sorted(EventData.registry))
def test_every_contract_is_stored_by_a_stream(subject: str) -> None:
    # A subject no stream stores is refused at publish, and the relay that holds it stops there for good.
    assert stream_of(subject) in STREAMS
