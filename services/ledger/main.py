"""Composition root of the ledger service: `uvicorn --factory services.ledger.main:create_app`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.ledger import api, handlers, store
from services.ledger.application import open_ledger
from services.ledger.rpc import LedgerRpc
from services.ledger.stream_relay import LedgerRelay
from services.ledger.sweeper import Sweeper
from services.ledger.unit_of_work import UnitOfWork
from shared import runtime, telemetry
from shared.http import create_app as create_service_app
from shared.settings import Settings

SERVICE = store.SCHEMA


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # read from the environment
    telemetry.setup(SERVICE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running(SERVICE, settings, store.DDL) as rt:
            ledger = await asyncio.to_thread(open_ledger, settings.database_url)
            rt.closers.append(ledger.close)
            relay = LedgerRelay(ledger, rt.pool, rt.js)
            rt.start_relay("ledger-relay", relay)
            unit = UnitOfWork(ledger, on_saved=relay.wake)
            rt.spawn("ledger-unit", unit.run)
            rt.spawn("ledger-sweeper", Sweeper(ledger, rt.pool, unit).run)
            for subscription in handlers.subscriptions(unit, settings.reservation_ttl_seconds):
                rt.consume(subscription)
            await LedgerRpc(ledger, unit, settings.reservation_ttl_seconds).serve(rt.nc)
            app.state.ledger = ledger
            app.state.unit = unit
            app.state.relay = relay
            app.state.runtime = rt
            yield

    return create_service_app(SERVICE, settings, lifespan, [api.router])
