"""Composition root of the projections service: `uvicorn --factory services.projections.main:create_app`."""

from __future__ import annotations

from fastapi import FastAPI

from services.projections import admin_api, api, finance_api, live, pages_api, projection
from services.projections.replay import Replayer
from shared.http import create_app as create_service_app
from shared.limits import Slots
from shared.runtime import Runtime
from shared.settings import Settings

SERVICE = "projections"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # read from the environment

    async def start(app: FastAPI, rt: Runtime) -> None:
        wakeups = live.Wakeups()
        models = projection.subscriptions(rt.pool, wakeups.wake)
        for subscription in models:
            rt.consume(subscription)
        rt.samplers.append(projection.lag_sampler(rt.js, models))
        app.state.wakeups = wakeups
        app.state.streams = Slots(rt.pool, "live stream", settings.max_open_streams)
        app.state.replayer = Replayer(settings.database_url, SERVICE, rt.pool, rt.nc)

    routers = [api.router, admin_api.router, finance_api.router, live.router, pages_api.router]
    return create_service_app(SERVICE, settings, start, routers)
