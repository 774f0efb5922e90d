"""Composition root of the ledger service: `uvicorn --factory services.ledger.main:create_app`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.ledger import api, api_commands, handlers, store
from services.ledger.dispatch import Dispatcher
from services.ledger.relay import LedgerRelay
from services.ledger.rpc import LedgerRpc
from services.ledger.sweeper import Sweeper
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
            ledger = await asyncio.to_thread(store.open_ledger, settings.database_url)
            rt.closers.append(ledger.close)
            relay = LedgerRelay(ledger, rt.pool, rt.js)
            rt.start_relay("ledger-relay", relay)
            dispatcher = Dispatcher(ledger, on_saved=relay.wake)
            rt.spawn("ledger-dispatcher", dispatcher.run)
            rt.spawn("ledger-sweeper", Sweeper(ledger, rt.pool, dispatcher).run)
            for subscription in handlers.subscriptions(dispatcher, settings.reservation_ttl_seconds):
                rt.consume(subscription)
            await LedgerRpc(ledger, dispatcher, settings.reservation_ttl_seconds).serve(rt.nc)
            app.state.ledger = ledger
            app.state.dispatcher = dispatcher
            app.state.relay = relay
            app.state.runtime = rt
            yield

    return create_service_app(SERVICE, settings, lifespan, [api.router, api_commands.router])
