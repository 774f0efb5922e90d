"""The invariant behind the input policy: whatever it accepts, every reader can apply. Text and JSON
drawn from all of Unicode (NUL and lone surrogates included) are either refused with a validation
error, or survive the event contract's wire format and PostgreSQL's TEXT and JSONB unchanged."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from shared.contracts import Envelope
from shared.contracts.ledger import CreditsDebited, EntryType

# Mostly values the policy should take, often ones it must refuse.
clean_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=60)
wild_text = st.text(st.characters(exclude_categories=()), max_size=60)  # surrogates and NUL too
texts = clean_text | wild_text | st.sampled_from(["\x00", "a\ud800b", "\udfff", "é" * 1001, ""])
safe = 2**53 - 1
numbers = st.integers(-safe, safe) | st.floats(-safe, safe) | st.integers() | st.floats()
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=30,
)


@pytest.fixture(scope="module")
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url) as connection:
        yield connection


def debited(description: Any, metadata: Any) -> CreditsDebited:
    return CreditsDebited(
        user_id=str(uuid.uuid4()),
        entry_type=EntryType.USAGE,
        amount=1,
        balance_after=0,
        description=description,
        metadata=metadata,
        idempotency_key="client:k",
        cause_id=None,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(description=texts, metadata=st.dictionaries(texts, json_values, max_size=5))
def test_what_the_policy_accepts_every_store_and_reader_takes_unchanged(
    conn: psycopg.Connection[Any], description: str, metadata: dict[str, Any]
) -> None:
    try:
        body = debited(description, metadata)
    except ValidationError:
        return  # refused at the door: nothing is stored, nothing reaches a reader
    wire = Envelope.from_bytes(Envelope.wrap(body, user_id=body.user_id).to_bytes()).body()
    assert wire == body
    stored = conn.execute("SELECT %s::text, %s::jsonb", (body.description, Jsonb(body.metadata))).fetchone()
    assert stored == (description, metadata)


@pytest.mark.parametrize(
    ("description", "metadata"),
    [("a\x00b", {}), ("\ud800", {}), ("ok", {"k": "\x00"}), ("ok", {"n": float("nan")}), ("ok", {"n": 1e308})],
)
def test_what_a_store_would_refuse_or_change_the_policy_refuses_first(
    conn: psycopg.Connection[Any], description: str, metadata: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        debited(description, metadata)
