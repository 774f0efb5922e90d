"""Waking a user's live streams when their read models change: the projection consumer calls `wake` after
its transaction commits; each stream waits on its own event, and polls anyway (a change applied by another
copy of projections wakes nobody here)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Wakeups:
    def __init__(self) -> None:
        self._waiting: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def wake(self, user_id: str) -> None:
        for event in self._waiting.get(user_id, ()):
            event.set()

    @asynccontextmanager
    async def watching(self, user_id: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiting[user_id].add(event)
        try:
            yield event
        finally:
            self._waiting[user_id].discard(event)
            if not self._waiting[user_id]:
                del self._waiting[user_id]
