"""Stripe payloads → what payments acts on: webhook events (parse_event) and PaymentIntents (payment_state)."""

from __future__ import annotations

from typing import Any

import pytest

from services.payments.domain import Status
from services.payments.stripe_objects import StripePayloadError, parse_event, payment_state

EVENT = "evt_1NG8Du2eZvKYlo2CUI79vXWy"
PI = "pi_3NG8Du2eZvKYlo2C1abcDEF"


def event(kind: str, obj: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": EVENT, "object": "event", "type": kind, "livemode": False}
    if obj is not None:
        payload["data"] = {"object": obj}
    return {**payload, **fields}


def intent(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": PI,
        "object": "payment_intent",
        "status": "succeeded",
        "amount": 2499,
        "currency": "usd",
        "metadata": {"transaction_id": "6f1c3a52-8f0e-4d8e-9a51-2f1f0c6b7a11", "user_id": "user-1"},
        "latest_charge": {"id": "ch_3NG8Du2eZvKYlo2C0xyz", "object": "charge", "amount_refunded": 0},
        "last_payment_error": None,
    }
    return {**base, **fields}


def storable(text: str) -> bool:
    text.encode("utf-8")  # raises on a lone surrogate
    return "\x00" not in text


# -- parse_event ---------------------------------------------------------------------------------


def test_a_payment_intent_event_names_its_payment_intent() -> None:
    parsed = parse_event(event("payment_intent.succeeded", {"id": PI, "object": "payment_intent"}))
    assert (parsed.id, parsed.type, parsed.object_id) == (EVENT, "payment_intent.succeeded", PI)


@pytest.mark.parametrize(
    "kind",
    [
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "payment_intent.processing",
    ],
)
def test_every_payment_intent_event_names_its_object(kind: str) -> None:
    assert parse_event(event(kind, {"id": PI})).object_id == PI


@pytest.mark.parametrize("kind", ["charge.refunded", "charge.refund.updated", "charge.succeeded", "charge.failed"])
def test_a_charge_event_names_the_payment_intent_of_its_charge(kind: str) -> None:
    parsed = parse_event(event(kind, {"id": "ch_3NG8Du2eZvKYlo2C0xyz", "object": "charge", "payment_intent": PI}))
    assert (parsed.id, parsed.type, parsed.object_id) == (EVENT, kind, PI)


def test_a_charge_made_without_a_payment_intent_is_not_acted_on() -> None:
    parsed = parse_event(event("charge.refunded", {"id": "ch_1", "payment_intent": None}))
    assert (parsed.id, parsed.object_id) == (EVENT, None)
    assert parse_event(event("charge.refunded", {"id": "ch_1"})).object_id is None


def test_an_unhandled_event_type_needs_no_data_and_is_not_acted_on() -> None:
    parsed = parse_event(event("invoice.created"))
    assert (parsed.id, parsed.type, parsed.object_id) == (EVENT, "invoice.created", None)


@pytest.mark.parametrize(
    "event_id",
    ["ch_1NG8Du2eZvKYlo2C", "evt_", "evt_1NG8\x00Du2e", "evt_" + "a" * 496, "evt_1NG8 Du2e", "evt_1NG8é", 42, None],
    ids=["not-evt", "empty", "nul", "500-chars", "space", "non-ascii", "number", "missing"],
)
def test_an_event_without_a_stripe_event_id_is_refused(event_id: Any) -> None:
    with pytest.raises(StripePayloadError):
        parse_event(event("payment_intent.succeeded", {"id": PI}, id=event_id))


@pytest.mark.parametrize("payload", [None, [], "evt_1", 42, [event("payment_intent.succeeded", {"id": PI})]])
def test_a_payload_that_is_not_an_object_is_refused(payload: Any) -> None:
    with pytest.raises(StripePayloadError):
        parse_event(payload)


@pytest.mark.parametrize("kind", [None, "", 7, "x" * 101, "payment_intent.succeedéd"])
def test_an_event_without_a_type_is_refused(kind: Any) -> None:
    with pytest.raises(StripePayloadError):
        parse_event(event("payment_intent.succeeded", {"id": PI}, type=kind))


@pytest.mark.parametrize(
    "payload",
    [
        event("payment_intent.succeeded"),
        event("payment_intent.succeeded", data=None),
        event("payment_intent.succeeded", data={"object": "pi_1"}),
        event("payment_intent.succeeded", {"id": "ch_1"}),
        event("payment_intent.succeeded", {"id": "pi_1\x00"}),
        event("payment_intent.succeeded", {"id": "pi_" + "a" * 497}),
        event("payment_intent.succeeded", {"object": "payment_intent"}),
        event("charge.refunded", {"id": "ch_1", "payment_intent": {"id": PI}}),
        event("charge.refunded", {"id": "ch_1", "payment_intent": "src_1"}),
    ],
    ids=["no-data", "null-data", "object-not-object", "not-pi", "nul", "long", "no-id", "expanded", "not-pi-field"],
)
def test_a_handled_event_whose_object_names_no_payment_intent_is_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(StripePayloadError):
        parse_event(payload)


# -- payment_state -------------------------------------------------------------------------------


def test_a_payment_intent_with_its_latest_charge_expanded_reads_as_its_state() -> None:
    refunded = intent(latest_charge={"id": "ch_3NG8Du2eZvKYlo2C0xyz", "object": "charge", "amount_refunded": 1250})
    state = payment_state(refunded)
    assert (state.payment_intent_id, state.status, state.amount, state.currency) == (PI, "succeeded", 2499, "usd")
    assert state.transaction_id == "6f1c3a52-8f0e-4d8e-9a51-2f1f0c6b7a11"
    assert (state.charge_id, state.amount_refunded, state.failure) == ("ch_3NG8Du2eZvKYlo2C0xyz", 1250, None)
    assert state.outcome is Status.REFUNDED
    assert payment_state(intent()).outcome is Status.COMPLETED


def test_a_payment_intent_without_a_charge_or_metadata_reads_as_pending() -> None:
    state = payment_state(intent(status="requires_payment_method", latest_charge=None, metadata={}))
    assert (state.charge_id, state.amount_refunded, state.transaction_id, state.failure) == (None, 0, None, None)
    assert state.outcome is Status.PENDING
    unexpanded = payment_state(intent(latest_charge="ch_3NG8Du2eZvKYlo2C0xyz", metadata=None))
    assert (unexpanded.charge_id, unexpanded.transaction_id) == (None, None)


def test_the_last_payment_errors_message_becomes_the_failure() -> None:
    error = {"code": "card_declined", "message": "Your card was declined.", "type": "card_error"}
    state = payment_state(intent(status="requires_payment_method", last_payment_error=error))
    assert state.failure == "Your card was declined."
    assert state.outcome is Status.FAILED


def test_a_last_payment_error_without_a_message_still_fails_the_payment() -> None:
    by_code = payment_state(intent(status="requires_payment_method", last_payment_error={"code": "card_declined"}))
    assert (by_code.failure, by_code.outcome) == ("card_declined", Status.FAILED)
    bare = payment_state(intent(status="requires_payment_method", last_payment_error={}))
    assert (bare.failure, bare.outcome) == ("failed", Status.FAILED)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Your card\x00 was declined.", "Your card was declined."),
        ("\ud800Your card was declined.", "?Your card was declined."),
        ("declined \udfff\x00\ud83d", "declined ??"),
        ("ok 💳 déclinée", "ok 💳 déclinée"),
    ],
    ids=["nul", "lone-high-surrogate", "both", "real-unicode-kept"],
)
def test_a_failure_message_comes_out_storable(message: str, expected: str) -> None:
    error = {"code": "card_declined", "message": message}
    state = payment_state(intent(status="requires_payment_method", last_payment_error=error))
    assert state.failure is not None and storable(state.failure)
    assert state.failure == expected
    assert state.outcome is Status.FAILED


def test_stripes_free_text_is_bounded_and_storable_everywhere_it_is_kept() -> None:
    state = payment_state(
        intent(
            metadata={"transaction_id": "t\x00x\ud800" + "y" * 1000},
            latest_charge={"id": "ch_\x00\udc00", "amount_refunded": 0},
            last_payment_error={"message": "z" * 1000},
        )
    )
    for text in (state.transaction_id, state.charge_id, state.failure):
        assert text is not None and storable(text) and len(text) <= 500
    assert state.transaction_id is not None and state.transaction_id.startswith("tx?y")


def test_a_failure_message_made_only_of_nuls_still_fails_the_payment() -> None:
    error = {"code": "card_declined", "message": "\x00\x00"}
    state = payment_state(intent(status="requires_payment_method", last_payment_error=error))
    assert (state.outcome, state.failure) == (Status.FAILED, "card_declined")


def test_metadata_that_is_not_an_object_names_no_transaction() -> None:
    for metadata in (["transaction_id"], "transaction_id", 7):
        assert payment_state(intent(metadata=metadata)).transaction_id is None


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "ch_1"},
        {"id": None},
        {"id": "pi_1\x00"},
        {"amount": "2499"},
        {"amount": None},
        {"amount": 24.99},
        {"latest_charge": {"id": "ch_1", "amount_refunded": "10"}},
    ],
    ids=["not-pi", "no-id", "nul-id", "string-amount", "no-amount", "float-amount", "string-refunded"],
)
def test_a_payment_intent_with_a_bad_id_or_amount_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(StripePayloadError):
        payment_state(intent(**fields))
