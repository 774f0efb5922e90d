"""The ledger's answers → media's RecordHold command, and the registry that runs every command once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.media.application import COMMAND_HANDLERS
from services.media.domain import (
    CancelVideo,
    Extend,
    Generate,
    Hold,
    ProcessVideo,
    RecordHold,
    RemoveBackground,
    Transform,
    Upload,
)
from services.media.handlers import DURABLE, to_command
from shared.contracts import Envelope, EventData
from shared.contracts import ledger as lc

USER = str(uuid.uuid4())


def answer(body: EventData) -> Envelope:
    return Envelope.wrap(body, user_id=USER)


def held(job_id: str | None) -> lc.CreditsReserved:
    return lc.CreditsReserved(
        user_id=USER, reservation_id="r1", amount=3, job_id=job_id, expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        balance=10, reserved_after=3, idempotency_key="job:x:reserve", cause_id=None,
    )  # fmt: skip


def refused(job_id: str | None) -> lc.ReservationRejected:
    return lc.ReservationRejected(
        user_id=USER, reservation_id="r1", job_id=job_id, amount=3, available=1, balance=2, reason="insufficient",
        idempotency_key="job:x:reserve", cause_id=None,
    )  # fmt: skip


def test_a_granted_hold_records_the_job_reserved_until_the_hold_lapses() -> None:
    job_id = str(uuid.uuid4())
    envelope = answer(held(job_id))
    assert to_command(envelope) == RecordHold(
        job_id=job_id, hold=Hold.RESERVED, expires_at=datetime(2030, 1, 1, tzinfo=UTC), consumer=DURABLE,
        answer_id=str(envelope.id),
    )  # fmt: skip


def test_a_refused_hold_records_the_ledgers_figures() -> None:
    job_id = str(uuid.uuid4())
    envelope = answer(refused(job_id))
    assert to_command(envelope) == RecordHold(
        job_id=job_id, hold=Hold.REJECTED, balance=2, available=1, refusal={"account": "user", "reason": "credits"},
        consumer=DURABLE, answer_id=str(envelope.id),
    )  # fmt: skip


def test_a_hold_refused_for_a_members_limit_says_so_to_media() -> None:
    job_id = str(uuid.uuid4())
    body = refused(job_id).model_copy(update={"member_id": USER, "limit": 5, "used": 3, "reason": "member limit"})
    command = to_command(answer(body))
    assert command is not None and command.refusal == {"account": "org", "reason": "limit", "limit": 5, "used": 3}


def test_a_hold_that_is_no_media_jobs_asks_nothing() -> None:
    for body in (held(None), held("a-callers-job"), refused(None), refused("a-callers-job")):
        assert to_command(answer(body)) is None


def test_every_command_media_takes_has_one_use_case() -> None:
    commands = {Upload, ProcessVideo, Transform, RemoveBackground, Extend, Generate, CancelVideo, RecordHold}
    assert set(COMMAND_HANDLERS) == commands
