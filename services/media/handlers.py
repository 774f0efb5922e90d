"""The ledger's answers to media's jobs → the job's hold; a held job goes to the workers' queue.

The effect and the inbox record share one transaction, so a redelivered answer changes nothing."""

from __future__ import annotations

from datetime import datetime

from psycopg_pool import AsyncConnectionPool

from services.media import store
from services.media.domain import Hold
from services.media.storage import Storage, drop_upload
from shared import outbox
from shared.bus import Subscription
from shared.contracts import Envelope, derive_id
from shared.contracts import ledger as lc
from shared.contracts import media as mc
from shared.inbox import first_delivery
from shared.inputs import is_uuid
from shared.outbox import OutboxRelay

DURABLE = "media-ledger"


class HoldAnswers:
    def __init__(self, pool: AsyncConnectionPool, relay: OutboxRelay, storage: Storage) -> None:
        self._pool = pool
        self._relay = relay
        self._storage = storage

    def subscription(self) -> Subscription:
        subjects = (lc.CreditsReserved.type, lc.ReservationRejected.type)
        return Subscription("LEDGER", DURABLE, subjects, self.apply)

    async def apply(self, envelope: Envelope, _seq: int) -> None:
        expires_at: datetime | None = None
        match envelope.body():
            case lc.CreditsReserved(job_id=str(job_id)) as held:
                expires_at = held.expires_at
                hold, balance, available = Hold.RESERVED, None, None
            case lc.ReservationRejected(job_id=str(job_id)) as refused:
                hold, balance, available = Hold.REJECTED, refused.balance, refused.available
            case _:
                return
        if not is_uuid(job_id):
            return  # not a media job's id: a caller's hold from when the ledger still let callers name a job
        refused_input: str | None = None
        async with self._pool.connection() as conn, conn.transaction():
            if not await first_delivery(conn, DURABLE, envelope.id):
                return
            job = await store.job(conn, job_id, lock=True)
            if job is None or job.hold is not Hold.REQUESTED:
                return  # not media's job, or answered before
            await store.set_hold(conn, job.id, hold, balance, available, expires_at)
            if hold is Hold.RESERVED:
                work = mc.WorkQueued(job_id=job.id, user_id=job.user_id, operation=job.operation)
                queued = Envelope.wrap(work, user_id=job.user_id, event_id=derive_id("mediawork", job.id))
                await outbox.add(conn, queued)
            else:  # refused: nothing of the request is kept but the answer
                await store.remove(conn, job.media_id)
                refused_input = job.input_key
        if refused_input is not None:
            await drop_upload(self._storage, refused_input)
        self._relay.wake()
