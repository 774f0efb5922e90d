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
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError, create_model

from services.ledger.answers import Answer, answer, problem
from services.ledger.application import ConcurrencyError, Ledger
from services.ledger.operations import OPERATIONS, Asked, command
from services.ledger.schemas import Body
from services.ledger.unit_of_work import UnitOfWork
from shared.inputs import Token

log = logging.getLogger(__name__)

QUEUE = "ledger"
# The operations a service may ask over NATS (grants and adjustments are admins' and need a token: HTTP).
COMMANDS = ("debit", "reserve", "capture", "release")


def _request_model(name: str) -> type[Body]:
    """The HTTP body of the operation, with what HTTP takes from the path and headers: the account, the
    key and, for a capture or release, the hold."""
    operation = OPERATIONS[name]
    fields: dict[str, Any] = {"user_id": (uuid.UUID, ...), "key": (Token, ...)}
    if operation.names_hold:
        fields["reservation_id"] = (uuid.UUID, ...)
    return create_model(f"{name.capitalize()}Request", __base__=operation.body, **fields)


class BalanceRequest(Body):
    user_id: uuid.UUID


REQUESTS: dict[str, type[Body]] = {name: _request_model(name) for name in COMMANDS} | {"balance": BalanceRequest}


class LedgerRpc:
    def __init__(self, ledger: Ledger, unit: UnitOfWork, ttl_seconds: int, *, max_in_flight: int = 256) -> None:
        self._ledger = ledger
        self._unit = unit
        self._ttl = ttl_seconds
        self._max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, nc: Client) -> list[Subscription]:
        return [await nc.subscribe(f"ledger.rpc.{name}", queue=QUEUE, cb=self._spawn) for name in REQUESTS]

    async def _spawn(self, msg: Msg) -> None:
        # nats-py runs one callback at a time per subscription; a task per request lets requests
        # overlap, and so share a batch. Past the bound a request is told at once to come back: queued
        # without end, requests would pile up in memory while their askers time out and ask again.
        if len(self._tasks) >= self._max_in_flight:
            await _respond(
                msg, problem(503, f"The ledger has {self._max_in_flight} requests in hand: ask again shortly.")
            )
            return
        task = asyncio.create_task(self._reply(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, msg: Msg) -> None:
        await _respond(msg, await self.call(msg.subject.rsplit(".", 1)[-1], msg.data))

    async def call(self, operation: str, payload: bytes) -> Answer:
        try:
            request = REQUESTS[operation].model_validate_json(payload)
        except ValidationError as error:
            return problem(422, "The request is not valid.", errors=json.loads(error.json(include_url=False)))
        try:
            if isinstance(request, BalanceRequest):
                return await self.balance(str(request.user_id))
            return await self._submit(operation, request)
        except ConcurrencyError as error:
            return answer(error)
        except Exception:
            log.exception("ledger.rpc.%s failed", operation)
            return problem(500, "An unexpected error occurred.")

    async def _submit(self, operation: str, request: Any) -> Answer:
        """`request` is the operation's body with the account, key and hold beside it (`_request_model`)."""
        held = str(request.reservation_id) if OPERATIONS[operation].names_hold else None
        asked = Asked(str(request.user_id), request.key, reservation_id=held, ttl_seconds=self._ttl)
        return answer(await self._unit.submit(command(operation, request, asked)))

    async def balance(self, user_id: str) -> Answer:
        account = await asyncio.to_thread(self._ledger.account, user_id)
        if account is None:
            return problem(404, f"No credit account for user {user_id}.")
        body = {"user_id": user_id, "balance": account.balance, "reserved": account.reserved}
        return Answer(200, {**body, "available": account.available, "active": account.active})


async def _respond(msg: Msg, result: Answer) -> None:
    if msg.reply:
        await msg.respond(json.dumps({"status": result.status, "body": result.body}).encode())
