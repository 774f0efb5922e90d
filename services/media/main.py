"""Composition root of the media service: `uvicorn --factory services.media.main:create_app`.
Its workers run apart: `uvicorn --factory services.media.worker:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.media import api, handlers, store
from services.media.application import MediaLibrary
from services.media.storage import LocalStorage
from shared import runtime, telemetry
from shared.http import create_app as create_service_app
from shared.settings import Settings

SERVICE = "media"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # read from the environment
    telemetry.setup(SERVICE)
    storage = LocalStorage(settings.data_dir / "media")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running(SERVICE, settings, store.DDL) as rt:
            relay = rt.start_outbox_relay()
            library = MediaLibrary(rt.pool, relay, storage)
            rt.consume(handlers.subscription(library))
            app.state.library = library
            app.state.runtime = rt
            yield

    return create_service_app(SERVICE, settings, lifespan, [api.router])
