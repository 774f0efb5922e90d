"""Baseline 1: the seed's naive design as a service. `uvicorn --factory bench.naive:create_app`.

A balance row per user and a log table; a debit is one transaction: a guarded UPDATE, then an INSERT
of the log row. No event store, no idempotency, no outbox, no projections. It verifies the bearer
token exactly as the services do (shared.auth.TokenVerifier against identity's dev JWKS, on a worker
thread), so both designs pay the same RS256 check per request and the ratio measures the design.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from shared import db, migrations
from shared.auth import AuthError, TokenVerifier, bearer_token
from shared.migrations import Migration
from shared.settings import Settings

SCHEMA = "naive"

DDL = (
    "CREATE TABLE IF NOT EXISTS credits (user_id UUID PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0))",
    """CREATE TABLE IF NOT EXISTS credit_log (
        id BIGSERIAL PRIMARY KEY,
        user_id UUID NOT NULL,
        amount BIGINT NOT NULL,
        balance_after BIGINT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS credit_log_by_user ON credit_log (user_id, id DESC)",
)

# One text for both baselines (psycopg's %(name)s here, pgbench's :name in bench/pgbench.py).
UPDATE = (
    "UPDATE credits SET balance = balance - {amount} WHERE user_id = {user} AND balance >= {amount} RETURNING balance"
)
INSERT = "INSERT INTO credit_log (user_id, amount, balance_after, description) VALUES ({user}, -{amount}::bigint, {after}, {description})"  # noqa: E501
PSYCOPG = {"amount": "%(amount)s", "user": "%(user)s", "after": "%(after)s", "description": "%(description)s"}


class DebitIn(BaseModel):
    amount: Annotated[int, Field(strict=True, gt=0, le=1_000_000)]
    description: Annotated[str, Field(max_length=500)] = ""


def create_app() -> FastAPI:
    settings = Settings()  # the system's environment, as a service reads it
    verifier = TokenVerifier(  # user tokens only: the audience of service tokens does not matter here
        settings.jwks_url, audience="naive", issuer=settings.issuer, authorized_parties=settings.authorized_parties
    )
    update, insert = UPDATE.format(**PSYCOPG), INSERT.format(**PSYCOPG)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrations.apply(settings.database_url, SCHEMA, ((SCHEMA, (Migration(1, "credits", DDL),)),))
        # The services' pool, same size: 10 connections for 32 clients.
        app.state.pool = await db.open_pool(settings.database_url, SCHEMA)
        yield
        await app.state.pool.close()

    app = FastAPI(title="naive credits (benchmark baseline)", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/accounts/{user_id}/debits", status_code=201)
    async def debit(user_id: uuid.UUID, body: DebitIn, request: Request) -> Any:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            return JSONResponse({"detail": "A bearer token is required."}, status_code=401)
        try:
            principal = await asyncio.to_thread(verifier.verify, token)
        except AuthError as error:
            return JSONResponse({"detail": str(error)}, status_code=401)
        if principal.user_id != str(user_id):
            return JSONResponse({"detail": "You may only act on your own account."}, status_code=403)
        values = {"user": user_id, "amount": body.amount, "description": body.description}
        async with request.app.state.pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(update, values)).fetchone()
            if row is None:
                return JSONResponse({"detail": "Not enough credits."}, status_code=402)
            await conn.execute(insert, {**values, "after": row[0]})
        return {"user_id": str(user_id), "amount": -body.amount, "balance_after": row[0]}

    return app
