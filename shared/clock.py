"""The one clock services ask for "now" where a rule depends on the calendar (a month's spending, a lot's expiry
as the sweeper sees it): real time,
moved by CLOCK_OFFSET_SECONDS in dev mode only, so a test can step into next month without waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def now() -> datetime:
    return datetime.now(UTC) + _offset


def move(seconds: float) -> None:
    global _offset
    _offset = timedelta(seconds=seconds)
