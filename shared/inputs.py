"""The input policy: what any value must be before a door lets it in.

Every door (JSON bodies, query parameters, headers, webhook payloads, token claims) and every event
contract uses these types, so a value a producer stores is a value every consumer can apply: text
that PostgreSQL's TEXT and JSONB can hold and any JSON parser can read, free-form JSON small and
shallow enough for every serializer in the path (pydantic stops at depth ~200, Python's json at
~1,000), numbers a JavaScript frontend reads exactly.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from typing import Annotated, Any, Generic, TypeVar

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

MAX_JSON_DEPTH = 16
MAX_METADATA_BYTES = 4096
MAX_JSON_STRING = 1000
# Integers beyond 2**53 lose precision in JavaScript (and so in every browser reading our JSON).
MAX_SAFE_INTEGER = 2**53 - 1
# A JSON command body; routes that take more (webhooks, uploads) say so themselves.
JSON_BODY_LIMIT = 64 * 1024
MAX_CURSOR_LENGTH = 512
CURSOR_PATTERN = r"^[A-Za-z0-9_-]*$"  # unpadded base64url


class InputError(ValueError):
    """A value no door may let in: answered with a 4xx, never stored."""


def check_text(value: str) -> str:
    """Refuse NUL (PostgreSQL cannot store it in TEXT or JSONB) and lone surrogates (not UTF-8)."""
    if "\x00" in value:
        raise InputError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("must be valid UTF-8 text (no lone surrogates)") from None
    return value


# Any character but NUL, and OpenAPI says so. Matching a pattern makes pydantic decode the string,
# so a lone surrogate is refused too (string_unicode).
TEXT_PATTERN = r"^[^\x00]*$"
# Text types, each with a length bound (in characters). Contracts use them too, so a door can never
# accept what a consumer of the event would refuse.
ShortText = Annotated[str, StringConstraints(max_length=200, pattern=TEXT_PATTERN)]  # ids, names, keys
MediumText = Annotated[str, StringConstraints(max_length=500, pattern=TEXT_PATTERN)]  # descriptions, reasons
LongText = Annotated[str, StringConstraints(max_length=2000, pattern=TEXT_PATTERN)]  # URLs


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Put last in an Annotated int with Field(strict=True, ...): an integer as JSON Schema means it
# (16927.0 is one), never a string or a boolean.
Whole = BeforeValidator(_whole)


def _email(value: str) -> str:
    try:
        # Special-use domains (.test, .local) are addresses too: nothing here sends mail to them.
        checked = validate_email(value, check_deliverability=False, globally_deliverable=False, test_environment=True)
        return checked.normalized
    except EmailNotValidError as exc:
        raise InputError(f"is not an email address: {exc}") from None


# email-validator's syntax rules (which bound the length at 254), normalized as pydantic's EmailStr is.
Email = Annotated[
    str,
    StringConstraints(max_length=254, pattern=TEXT_PATTERN),
    AfterValidator(_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 254}),
]
# Printable ASCII without spaces: what fits an HTTP header and an id column unchanged.
Token = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]


def check_json(value: Any, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_METADATA_BYTES) -> Any:
    """Free-form JSON every reader can handle: bounded depth and size, finite safe numbers, clean text."""
    _check_node(value, max_depth, 1, MAX_JSON_STRING)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > max_bytes:
        raise InputError(f"must be at most {max_bytes} bytes of JSON (it is {size})")
    return value


def _check_node(value: Any, max_depth: int, depth: int, max_string: int | None) -> None:
    if isinstance(value, dict | list):
        if depth > max_depth:
            raise InputError(f"must nest at most {max_depth} levels deep")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                check_text(key)
            _check_node(item, max_depth, depth + 1, max_string)
    elif isinstance(value, str):
        if max_string is not None and len(value) > max_string:
            raise InputError(f"strings must be at most {max_string} characters")
        check_text(value)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, float) and not math.isfinite(value):
        raise InputError("numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, int | float):
        # Beyond it, JavaScript loses digits, and PostgreSQL's JSONB writes 1e308 out as a 309-digit integer.
        if abs(value) > MAX_SAFE_INTEGER:
            raise InputError(f"numbers must be within ±{MAX_SAFE_INTEGER}")
    else:
        raise InputError(f"{type(value).__name__} is not a JSON value")


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    return check_json(value)


# The policy in JSON Schema, as far as JSON Schema can say it (depth and total size it cannot):
# shared/openapi.py puts it in every service's components.
JSON_VALUE = "JsonValue"
_ANY_JSON = {"$ref": f"#/components/schemas/{JSON_VALUE}"}
JSON_VALUE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "number", "minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER},
        {"type": "string", "pattern": TEXT_PATTERN, "maxLength": MAX_JSON_STRING},
        {"type": "array", "items": _ANY_JSON},
        {"type": "object", "additionalProperties": _ANY_JSON, "propertyNames": {"pattern": TEXT_PATTERN}},
    ]
}
# Free-form metadata on commands and events.
JsonObject = Annotated[
    dict[str, Any],
    AfterValidator(_json_object),
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": _ANY_JSON,
            "propertyNames": {"pattern": TEXT_PATTERN},
            "description": f"Free-form JSON, at most {MAX_JSON_DEPTH} levels deep and {MAX_METADATA_BYTES} bytes",
        }
    ),
]


def load_json(raw: bytes, *, max_depth: int) -> Any:
    """Parse a raw body (a webhook's): malformed, too deep or non-finite JSON is an InputError."""
    try:
        value = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise InputError(f"JSON nests deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"not JSON: {exc}") from None
    # No bound on a string here: the body's limit bounds them all, the reader bounds the fields it keeps.
    _check_node(value, max_depth, 1, None)
    return value


def _no_constants(name: str) -> Any:
    raise InputError(f"{name} is not a JSON number")


T = TypeVar("T")


class CursorCodec(Generic[T]):
    """Opaque page cursors: the API hands out base64 of a typed value and takes back only that."""

    def __init__(self, shape: Any) -> None:
        self._adapter: TypeAdapter[T] = TypeAdapter(shape)

    def encode(self, value: T) -> str:
        return base64.urlsafe_b64encode(self._adapter.dump_json(value)).decode().rstrip("=")

    def decode(self, cursor: str | None) -> T | None:
        if not cursor:  # `?cursor=` as a form sends it: the first page
            return None
        try:
            if len(cursor) > MAX_CURSOR_LENGTH:
                raise ValueError("too long")
            raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
            return self._adapter.validate_json(raw)
        except (ValueError, UnicodeError, binascii.Error, ValidationError):
            raise BadCursorError("The cursor is not one this API returned.") from None


class BadCursorError(InputError):
    pass


def _iso_text(value: Any) -> Any:
    # pydantic reads a number (or a number's text, as a query parameter is) as seconds since 1970; the
    # schema says an ISO 8601 string, and only that.
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
        raise InputError("must be an ISO 8601 date-time with a time zone, not a number")
    return value


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


# A moment as JSON carries it: ISO 8601 text with a time zone (2026-11-25T10:00:00Z).
Moment = Annotated[AwareDatetime, BeforeValidator(_iso_text)]


def is_uuid(value: str) -> bool:
    """Whether `value` reads as a UUID: ids other services or clients chose need not."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
