"""Composition root of the ledger service: `uvicorn --factory services.ledger.main:create_app`."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from services.ledger import api, handlers, store
from services.ledger.application import open_ledger
from services.ledger.rpc import LedgerRpc
from services.ledger.stream_relay import LedgerRelay
from services.ledger.sweeper import Sweeper
from services.ledger.unit_of_work import UnitOfWork
from shared import metrics
from shared.http import create_app as create_service_app
from shared.runtime import Runtime
from shared.settings import Settings

SERVICE = store.SCHEMA


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # read from the environment
    ttl = settings.reservation_ttl_seconds

    async def start(app: FastAPI, rt: Runtime) -> None:
        ledger = await asyncio.to_thread(open_ledger, settings.database_url)
        rt.closers.append(ledger.close)
        relay = LedgerRelay(ledger, rt.pool, rt.js)
        rt.start_relay("ledger-relay", relay)
        unit = UnitOfWork(ledger, on_saved=relay.wake)
        rt.spawn("ledger-unit", unit.run)
        rt.spawn("ledger-sweeper", Sweeper(ledger, rt.pool, unit).run)
        for subscription in handlers.subscriptions(unit, ttl):
            rt.consume(subscription)
        await LedgerRpc(ledger, unit, ttl, max_in_flight=settings.ledger_rpc_max_in_flight).serve(rt.nc)
        app.state.ledger, app.state.unit, app.state.relay = ledger, unit, relay

        async def audited() -> None:
            async with rt.pool.connection() as conn:
                last = await store.last_audit(conn)
            if last is not None:
                metrics.AUDIT_LAST_RUN.set(last[0].timestamp())
                metrics.AUDIT_DISCREPANCIES.set(last[1])

        rt.samplers.append(audited)

    return create_service_app(SERVICE, settings, start, [api.router])
