"""The ledger's answers for media's jobs' holds → RecordHold (a held job goes to the workers' queue).

Its use case records each answer in the inbox in the effect's own transaction, so a redelivered answer
changes nothing."""

from __future__ import annotations

from typing import Any

from services.media.application import MediaLibrary
from services.media.domain import Hold, RecordHold
from shared.bus import Subscription
from shared.contracts import Envelope
from shared.contracts import ledger as lc
from shared.inputs import is_uuid

DURABLE = "media-ledger"
SUBJECTS = (lc.CreditsReserved.type, lc.ReservationRejected.type)


def subscription(library: MediaLibrary) -> Subscription:
    async def apply(envelope: Envelope, _seq: int) -> None:
        if (command := to_command(envelope)) is not None:
            await library.handle(command)

    return Subscription("LEDGER", DURABLE, SUBJECTS, apply)


def refusal_of(refused: lc.ReservationRejected) -> dict[str, Any]:
    """Whose credit was short ("org" when a member spent an organization's), or the member's limit."""
    account = "user" if refused.member_id is None else "org"
    if refused.limit is not None and refused.reason == "usage cap":
        return {"account": account, "reason": "cap", "cap": refused.limit, "used": refused.used}
    if refused.limit is not None:
        return {"account": account, "reason": "limit", "limit": refused.limit, "used": refused.used}
    return {"account": account, "reason": "credits"}


def to_command(envelope: Envelope) -> RecordHold | None:
    # A job id that is no UUID is no media job's: a caller's hold from when the ledger still let callers
    # name a job.
    answer_id = str(envelope.id)
    match envelope.body():
        case lc.CreditsReserved(job_id=str(job_id)) as held if is_uuid(job_id):
            return RecordHold(
                job_id=job_id, hold=Hold.RESERVED, expires_at=held.expires_at, consumer=DURABLE, answer_id=answer_id
            )
        case lc.ReservationRejected(job_id=str(job_id)) as refused if is_uuid(job_id):
            return RecordHold(
                job_id=job_id, hold=Hold.REJECTED, balance=refused.balance, available=refused.available,
                refusal=refusal_of(refused), consumer=DURABLE, answer_id=answer_id,
            )  # fmt: skip
        case _:
            return None
