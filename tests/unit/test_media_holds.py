"""How long a media job's credit hold lasts: the operation's own TTL travels with the request to the
ledger, and a worker records an outcome only while the hold still lasts (with room to reach the ledger)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.ledger.commands import HoldForJob
from services.ledger.handlers import to_command
from services.media.domain import SETTLE_MARGIN, Hold, Job
from shared.contracts import Envelope
from shared.contracts import media as mc
from shared.credits import HOLD_SECONDS, OPERATION_COSTS

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def requested(operation: str, hold_seconds: int | None) -> HoldForJob:
    body = mc.JobRequested(job_id="j", user_id="u", operation=operation, cost=OPERATION_COSTS[operation],
                           resource_type="image", resource_id="m", hold_seconds=hold_seconds)  # fmt: skip
    command = to_command(Envelope.wrap(body, user_id="u"), 900)
    assert isinstance(command, HoldForJob)
    return command


@pytest.mark.parametrize("operation", sorted(OPERATION_COSTS))
def test_every_operation_has_its_own_hold_time_and_the_ledger_uses_it(operation: str) -> None:
    before = datetime.now(UTC)
    command = requested(operation, HOLD_SECONDS[operation])
    held_for = (command.expires_at - before).total_seconds()
    assert HOLD_SECONDS[operation] <= held_for < HOLD_SECONDS[operation] + 5


def test_a_video_is_held_far_longer_than_an_image() -> None:
    assert HOLD_SECONDS["video_processing"] >= 10 * HOLD_SECONDS["image_upload"]


def test_a_request_without_a_hold_time_gets_the_ledgers_default() -> None:
    before = datetime.now(UTC)
    held_for = (requested("image_upload", None).expires_at - before).total_seconds()
    assert 900 <= held_for < 905


def job(expires_at: datetime | None) -> Job:
    return Job("j", "m", "u", "image_upload", 1, "", Hold.RESERVED, hold_expires_at=expires_at)


def test_an_outcome_is_recorded_only_while_the_hold_lasts_with_room_to_reach_the_ledger() -> None:
    assert job(None).hold_lasts(NOW)  # asked before holds carried an expiry
    assert job(NOW + SETTLE_MARGIN + timedelta(seconds=1)).hold_lasts(NOW)
    assert not job(NOW + SETTLE_MARGIN).hold_lasts(NOW)  # it would expire on the way
    assert not job(NOW - timedelta(seconds=1)).hold_lasts(NOW)
