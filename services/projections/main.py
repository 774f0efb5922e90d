"""Composition root of the projections service: `uvicorn --factory services.projections.main:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.projections import api, projection, store
from shared import runtime, telemetry
from shared.http import create_app as create_service_app
from shared.settings import Settings

SERVICE = "projections"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # read from the environment
    telemetry.setup(SERVICE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running(SERVICE, settings, store.DDL) as rt:
            for subscription in projection.subscriptions(rt.pool, lambda _user_id: None):
                rt.consume(subscription)
            app.state.runtime = rt
            yield

    return create_service_app(SERVICE, settings, lifespan, [api.router])
