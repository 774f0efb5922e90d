"""What media asks the ledger before it reads an upload's body: the user's credit now, over
`ledger.rpc.balance` (the one ledger request media's NATS user may make: it reads, it moves nothing).
An answer that does not come, or does not parse, is no answer: the hold decides alone, as for every
other operation."""

from __future__ import annotations

import json
import logging

import nats.errors
from nats.aio.client import Client
from pydantic import BaseModel, ValidationError

from services.media.application import Balances, Credit

log = logging.getLogger(__name__)
SUBJECT = "ledger.rpc.balance"
ASK_SECONDS = 2.0


class _Account(BaseModel):
    balance: int
    available: int


class _Reply(BaseModel):
    status: int
    body: dict[str, object]


def asking(nc: Client, timeout: float = ASK_SECONDS) -> Balances:
    async def balance(user_id: str) -> Credit | None:
        try:
            msg = await nc.request(SUBJECT, json.dumps({"user_id": user_id}).encode(), timeout=timeout)
            reply = _Reply.model_validate_json(msg.data)
            if reply.status != 200:
                return None  # no account yet (or a refusal): the hold will say
            account = _Account.model_validate(reply.body)
        except (nats.errors.Error, ValidationError) as exc:
            log.warning("no balance from the ledger for an upload (%s): the hold decides", type(exc).__name__)
            return None
        return Credit(account.balance, account.available)

    return balance
