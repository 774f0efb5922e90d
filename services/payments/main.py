"""Composition root of the payments service: `uvicorn --factory services.payments.main:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.payments import api, store
from shared import runtime, telemetry
from shared.http import create_app as create_service_app
from shared.settings import Settings

SERVICE = "payments"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # read from the environment
    telemetry.setup(SERVICE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running(SERVICE, settings, store.DDL) as rt:
            rt.start_outbox_relay()
            app.state.runtime = rt
            yield

    return create_service_app(SERVICE, settings, lifespan, [api.router])
