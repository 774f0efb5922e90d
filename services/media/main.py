"""Composition root of the media service: `uvicorn --factory services.media.main:create_app`.
Its workers run apart: `uvicorn --factory services.media.worker:create_app`."""

from __future__ import annotations

from fastapi import FastAPI

from services.media import api, balances, handlers
from services.media.application import MediaLibrary
from services.media.storage import LocalStorage
from shared.http import create_app as create_service_app
from shared.runtime import Runtime
from shared.settings import Settings

SERVICE = "media"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # read from the environment
    storage = LocalStorage(settings.data_dir / "media")

    async def start(app: FastAPI, rt: Runtime) -> None:
        library = MediaLibrary(
            rt.pool, rt.start_outbox_relay(), storage,
            balances=balances.asking(rt.nc), max_uploads=settings.media_max_uploads,
        )  # fmt: skip
        rt.consume(handlers.subscription(library))
        rt.spawn("incoming-sweep", library.sweeping)
        rt.erasers.append(library.forget)
        app.state.library = library

    return create_service_app(SERVICE, settings, start, [api.router])
