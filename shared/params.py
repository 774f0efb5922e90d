"""Request parameters every service reads the same way, checked at the door like any other input.

`Idempotency-Key`: every command that changes money or credits requires one. A retry with the same
key gets the first answer; the same key with a different request is a 409 (each service keeps its own
record of keys and answers). `X-Request-Id` / `X-Correlation-Id`: optional ids a caller may give so
its request can be followed through the events it causes; they are stored on those events.
All three are printable ASCII, 1-200 characters: what any HTTP client sends unchanged and any store
and stream keeps as is. `cursor`: the `next_cursor` of the page before, opaque (see CursorCodec).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, Query

from shared.inputs import CURSOR_PATTERN, MAX_CURSOR_LENGTH, Token

IdempotencyKey = Annotated[
    Token,
    Header(
        alias="Idempotency-Key",
        description="Unique per command (a UUID is a good choice); a retry with the same key gets the first answer.",
    ),
]


async def _request_id(x_request_id: Annotated[Token | None, Header(alias="X-Request-Id")] = None) -> str:
    return x_request_id or f"request:{uuid.uuid4()}"


# The caller's request id, or a new one: what the events a command causes name as their cause.
RequestId = Annotated[str, Depends(_request_id)]
CorrelationId = Annotated[
    Token | None, Header(alias="X-Correlation-Id", description="Ties the events this request causes together.")
]

# Only the format is documented (not validated here): a cursor the API never handed out is a 400 from
# its CursorCodec, whatever it looks like.
PageCursor = Annotated[
    str | None,
    Query(
        description="next_cursor of the previous page; omit (or leave empty) for the first",
        json_schema_extra={"pattern": CURSOR_PATTERN, "maxLength": MAX_CURSOR_LENGTH},
    ),
]
