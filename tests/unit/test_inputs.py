"""The input policy (shared/inputs.py): what it refuses, what it lets through, and that a cursor is
either one the API handed out or a 400, never anything else."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from typing import Annotated, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel, Field, TypeAdapter, ValidationError

from shared.inputs import (
    MAX_JSON_DEPTH,
    MAX_JSON_STRING,
    MAX_METADATA_BYTES,
    MAX_SAFE_INTEGER,
    BadCursorError,
    CursorCodec,
    InputError,
    JsonObject,
    MediumText,
    Moment,
    ShortText,
    load_json,
)


class Command(BaseModel):
    name: ShortText
    description: MediumText = ""
    metadata: JsonObject = Field(default_factory=dict)


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep (the outermost counts as one)."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "a\x00b"},
        {"name": "lone \ud800 surrogate"},
        {"name": "x" * 201},
        {"name": "ok", "description": "nul \x00 inside"},
        {"name": "ok", "metadata": {"k": "a\x00b"}},
        {"name": "ok", "metadata": {"k\x00": 1}},
        {"name": "ok", "metadata": {"deep": [{"k": "\udfff"}]}},
        {"name": "ok", "metadata": nested(MAX_JSON_DEPTH + 1)},
        {"name": "ok", "metadata": nested(300)},
        {"name": "ok", "metadata": {"n": float("nan")}},
        {"name": "ok", "metadata": {"n": float("inf")}},
        {"name": "ok", "metadata": {"n": -float("inf")}},
        {"name": "ok", "metadata": {"n": MAX_SAFE_INTEGER + 1}},
        {"name": "ok", "metadata": {"n": -(10**400)}},
        {"name": "ok", "metadata": {"n": 1.7976931348623157e308}},
        {"name": "ok", "metadata": {"s": "x" * (MAX_JSON_STRING + 1)}},
        {"name": "ok", "metadata": {f"s{i}": "x" * MAX_JSON_STRING for i in range(5)}},
    ],
)
def test_the_policy_refuses_what_a_reader_downstream_could_not_apply(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Command.model_validate(fields)


def test_the_policy_lets_through_the_nastiest_values_every_reader_can_apply() -> None:
    edge = "ZWJ\u200d 👩‍👩‍👧 RTL \u202e e\u0301 \u2028 \t\r\n \x01 \\ \" ' %s {} \U0010ffff"
    metadata = {
        "deep": nested(MAX_JSON_DEPTH - 1),
        "edge": edge,
        edge: [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 9.007199254740991e15, -0.0, 5e-324, True, None],
    }
    used = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())
    # Strings of at most MAX_JSON_STRING characters (2 bytes each) up to the size limit.
    pads = (MAX_METADATA_BYTES - used) // (2 * MAX_JSON_STRING + 8)
    metadata["pad"] = ["é" * MAX_JSON_STRING] * pads
    used = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())
    metadata["end"] = "é" * ((MAX_METADATA_BYTES - used - 9) // 2)
    command = Command(name=edge[:200], description=edge * 10, metadata=metadata)
    assert len(json.dumps(command.metadata, ensure_ascii=False, separators=(",", ":")).encode()) <= MAX_METADATA_BYTES
    assert Command.model_validate_json(command.model_dump_json()) == command


def test_a_raw_body_is_parsed_within_bounds_or_refused_as_input() -> None:
    assert load_json(b'{"a": [1, {"b": "c"}]}', max_depth=3) == {"a": [1, {"b": "c"}]}
    for raw in (b'{"a": NaN}', b"[Infinity]", b'{"a": 1', b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(InputError):
            load_json(raw, max_depth=32)
    with pytest.raises(InputError, match="nest"):
        load_json(json.dumps(nested(33)).encode(), max_depth=32)
    with pytest.raises(InputError, match="NUL"):
        load_json(b'{"name": "a\\u0000b"}', max_depth=32)


USERS: CursorCodec[tuple[AwareDatetime, Any]] = CursorCodec(tuple[AwareDatetime, int])
SEQUENCE: CursorCodec[int] = CursorCodec(Annotated[int, Field(ge=1, le=2**62)])


def test_a_cursor_round_trips_and_is_opaque() -> None:
    cursor = SEQUENCE.encode(1234)
    assert SEQUENCE.decode(cursor) == 1234
    assert not cursor.isdigit()
    assert SEQUENCE.decode(None) is None
    assert SEQUENCE.decode("") is None  # `?cursor=`: the first page


@pytest.mark.parametrize(
    "cursor",
    ["²", "9" * 5000, "'; drop table", "%%%", "bnVsbA", "WzEsMl0", "MA", "LTE", SEQUENCE.encode(1) + "x" * 600],
)
def test_a_cursor_the_api_did_not_hand_out_is_a_bad_cursor(cursor: str) -> None:
    with pytest.raises(BadCursorError):
        SEQUENCE.decode(cursor)


@given(st.text(max_size=80))
def test_any_text_as_a_cursor_decodes_or_is_a_bad_cursor_never_another_error(cursor: str) -> None:
    for codec in (SEQUENCE, USERS):
        with contextlib.suppress(BadCursorError):
            codec.decode(cursor)


@pytest.mark.parametrize("text", ["0.5", "12", "1e5", " -3 ", ".5"])
def test_a_moment_is_iso_text_never_a_number_or_a_numbers_text(text: str) -> None:
    with pytest.raises(ValidationError, match="ISO 8601"):
        TypeAdapter(Moment).validate_python(text)
    assert TypeAdapter(Moment).validate_python("2026-11-25T10:00:00+01:00").utcoffset() == timedelta(hours=1)
