"""Composition root of the ledger service: `uvicorn --factory services.ledger.main:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.ledger import api, handlers, store
from services.ledger.application import Ledger
from services.ledger.relay import LedgerRelay
from shared import runtime, telemetry
from shared.http import create_app as create_service_app
from shared.settings import Settings

SERVICE = store.SCHEMA


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # type: ignore[call-arg]  # read from the environment
    telemetry.setup(SERVICE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running(SERVICE, settings, store.DDL) as rt:
            ledger = Ledger(env=store.eventsourcing_env(settings.database_url))
            rt.closers.append(ledger.close)
            relay = LedgerRelay(ledger, rt.pool, rt.js)
            rt.spawn("ledger-relay", relay.run)
            for subscription in handlers.subscriptions(ledger, relay.wake):
                rt.consume(subscription)
            app.state.ledger = ledger
            app.state.relay = relay
            app.state.runtime = rt
            yield

    return create_service_app(SERVICE, settings, lifespan, [api.router])
