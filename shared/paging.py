"""Newest-first pages of records keyed by (created_at, id): the one way every list of this kind pages.

The cursor is the (created_at, id) of the last record of a page, opaque to clients (CursorCodec); the
next page starts below it. One more record than asked is fetched to know whether a next page exists."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol, TypeVar

from pydantic import AwareDatetime

from shared.inputs import CursorCodec


class Keyed(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...


T = TypeVar("T", bound=Keyed)
After = tuple[datetime, str] | None
NEWEST_FIRST: CursorCodec[tuple[AwareDatetime, uuid.UUID]] = CursorCodec(tuple[AwareDatetime, uuid.UUID])


async def newest_first(
    cursor: str | None, limit: int, fetch: Callable[[After, int], Awaitable[list[T]]]
) -> tuple[list[T], str | None]:
    """One page of what `fetch(after, n)` finds (newest first, below `after`), and the next page's cursor."""
    after = NEWEST_FIRST.decode(cursor)
    found = await fetch((after[0], str(after[1])) if after else None, limit + 1)
    page, more = found[:limit], len(found) > limit
    last = page[-1] if more else None
    return page, NEWEST_FIRST.encode((last.created_at, uuid.UUID(last.id))) if last else None
