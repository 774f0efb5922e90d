"""NATS request/reply for services: `ledger.rpc.debit|reserve|capture|release|balance`.

Same commands, keys and answers as HTTP: the reply is `{"status": <HTTP status>, "body": {...}}`.
Subscribed in queue group `ledger`, so each request reaches one ledger instance. There is no token
here: who may publish on `ledger.rpc.>` is the NATS server's permissions' business (services only).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError

from services.ledger import commands
from services.ledger.answers import Answer, answer, problem
from services.ledger.application import Command, ConcurrencyError, Ledger
from services.ledger.schemas import Body, CaptureIn, DebitIn, ReleaseIn, ReservationIn
from services.ledger.unit_of_work import UnitOfWork
from shared.inputs import Token

log = logging.getLogger(__name__)

QUEUE = "ledger"


class DebitRequest(DebitIn):
    user_id: uuid.UUID
    key: Token


class ReserveRequest(ReservationIn):
    user_id: uuid.UUID
    key: Token


class CaptureRequest(CaptureIn):
    user_id: uuid.UUID
    reservation_id: uuid.UUID
    key: Token


class ReleaseRequest(ReleaseIn):
    user_id: uuid.UUID
    reservation_id: uuid.UUID
    key: Token


class BalanceRequest(Body):
    user_id: uuid.UUID


class LedgerRpc:
    def __init__(self, ledger: Ledger, unit: UnitOfWork, ttl_seconds: int) -> None:
        self._ledger = ledger
        self._unit = unit
        self._ttl = ttl_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self.operations: dict[str, tuple[type[BaseModel], Callable[[Any], Awaitable[Answer]]]] = {
            "debit": (DebitRequest, self.debit),
            "reserve": (ReserveRequest, self.reserve),
            "capture": (CaptureRequest, self.capture),
            "release": (ReleaseRequest, self.release),
            "balance": (BalanceRequest, self.balance),
        }

    async def serve(self, nc: Client) -> list[Subscription]:
        subs = []
        for name in self.operations:
            subs.append(await nc.subscribe(f"ledger.rpc.{name}", queue=QUEUE, cb=self._spawn))
        return subs

    async def _spawn(self, msg: Msg) -> None:
        # nats-py runs one callback at a time per subscription; a task per request lets requests
        # overlap, and so share a batch.
        task = asyncio.create_task(self._reply(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, msg: Msg) -> None:
        result = await self.call(msg.subject.rsplit(".", 1)[-1], msg.data)
        if msg.reply:
            await msg.respond(json.dumps({"status": result.status, "body": result.body}).encode())

    async def call(self, operation: str, payload: bytes) -> Answer:
        model, run = self.operations[operation]
        try:
            request = model.model_validate_json(payload)
        except ValidationError as error:
            return problem(422, "The request is not valid.", errors=json.loads(error.json(include_url=False)))
        try:
            return await run(request)
        except ConcurrencyError as error:
            return answer(error)
        except Exception:
            log.exception("ledger.rpc.%s failed", operation)
            return problem(500, "An unexpected error occurred.")

    async def _submit(self, command: Command) -> Answer:
        return answer(await self._unit.submit(command))

    async def debit(self, r: DebitRequest) -> Answer:
        return await self._submit(
            commands.debit(
                str(r.user_id),
                amount=r.amount,
                description=r.description,
                metadata=r.metadata,
                key=r.key,
                request_id=None,
            )
        )

    async def reserve(self, r: ReserveRequest) -> Answer:
        ttl = r.ttl_seconds or self._ttl
        now = datetime.now(UTC)
        cmd = commands.reserve(str(r.user_id), amount=r.amount, ttl_seconds=ttl, now=now, key=r.key, request_id=None)
        return await self._submit(cmd)

    async def capture(self, r: CaptureRequest) -> Answer:
        rid = str(r.reservation_id)
        cmd = commands.capture(
            str(r.user_id), reservation_id=rid, amount=r.amount, description=r.description, key=r.key, request_id=None
        )
        return await self._submit(cmd)

    async def release(self, r: ReleaseRequest) -> Answer:
        rid = str(r.reservation_id)
        cmd = commands.release(str(r.user_id), reservation_id=rid, reason=r.reason, key=r.key, request_id=None)
        return await self._submit(cmd)

    async def balance(self, r: BalanceRequest) -> Answer:
        account = await asyncio.to_thread(self._ledger.account, str(r.user_id))
        if account is None:
            return problem(404, f"No credit account for user {r.user_id}.")
        body = {"user_id": str(r.user_id), "balance": account.balance, "reserved": account.reserved}
        return Answer(200, {**body, "available": account.available, "active": account.active})
