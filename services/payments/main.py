"""Composition root of the payments service: `uvicorn --factory services.payments.main:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.payments import admin_api, api, dev, handlers, store, webhooks
from services.payments.application import Payments
from services.payments.gateway import StripeGateway
from shared import runtime, telemetry
from shared.http import create_app as create_service_app
from shared.settings import Settings

SERVICE = "payments"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # read from the environment
    telemetry.setup(SERVICE)
    key = settings.stripe_secret_key
    gateway = StripeGateway(key.get_secret_value(), settings.stripe_api_base) if key else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running(SERVICE, settings, store.DDL) as rt:
            relay = rt.start_outbox_relay()
            payments = Payments(rt.pool, relay, gateway)
            rt.spawn("stripe-events", payments.stripe_events.run)
            for subscription in handlers.subscriptions(payments):
                rt.consume(subscription)
            rt.alarms.append(payments.stripe_events.stuck_events_problem)
            app.state.payments = payments
            app.state.runtime = rt
            yield

    routers = [api.router, admin_api.router, webhooks.router]
    if settings.auth_mode == "dev" and settings.stripe_api_base:  # a fake Stripe: the test-card form may pay
        routers.append(dev.router)
    app = create_service_app(SERVICE, settings, lifespan, routers)
    secret = settings.stripe_webhook_secret
    app.state.stripe_webhook_secret = secret.get_secret_value() if secret else None
    return app
