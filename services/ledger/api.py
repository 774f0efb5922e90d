"""Ledger's HTTP API: maps domain errors to problem details."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from services.ledger.application import Ledger
from shared.auth import CurrentPrincipal, ensure_may_act_for
from shared.problems import Problem

router = APIRouter(tags=["accounts"])


def get_ledger(request: Request) -> Ledger:
    return request.app.state.ledger


LedgerDep = Annotated[Ledger, Depends(get_ledger)]


class AccountPublic(BaseModel):
    user_id: str
    balance: int
    reserved: int
    available: int
    active: bool


@router.get("/api/accounts/{user_id}", response_model=AccountPublic)
async def get_account(user_id: str, principal: CurrentPrincipal, ledger: LedgerDep) -> AccountPublic:
    ensure_may_act_for(principal, user_id)
    account = await asyncio.to_thread(ledger.account, user_id)
    if account is None:
        raise Problem(404, "Not Found", f"No credit account for user {user_id}.")
    return AccountPublic(
        user_id=user_id,
        balance=account.balance,
        reserved=account.reserved,
        available=account.available,
        active=account.active,
    )
