"""Composition root of the payments service: `uvicorn --factory services.payments.main:create_app`."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from services.payments import admin_api, api, dev, handlers, webhooks
from services.payments.application import Payments
from services.payments.gateway import StripeGateway
from shared.http import create_app as create_service_app
from shared.runtime import Runtime
from shared.settings import Settings

SERVICE = "payments"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # read from the environment
    key = settings.stripe_secret_key
    gateway = StripeGateway(key.get_secret_value(), settings.stripe_api_base) if key else None

    async def start(app: FastAPI, rt: Runtime) -> None:
        cooldown = timedelta(seconds=settings.recharge_cooldown_seconds)
        payments = Payments(
            rt.pool, rt.start_outbox_relay(), gateway, recharge_cooldown=cooldown, topup_prices=settings.topup_prices
        )
        rt.spawn("stripe-events", payments.stripe_events.run)
        for subscription in handlers.subscriptions(payments):
            rt.consume(subscription)
        rt.alarms.append(payments.stripe_events.stuck_events_problem)
        app.state.payments = payments

    routers = [api.router, admin_api.router, webhooks.router]
    if settings.auth_mode == "dev" and settings.stripe_api_base:  # a fake Stripe: the test-card form may pay
        routers.append(dev.router)
    app = create_service_app(SERVICE, settings, start, routers)
    secret = settings.stripe_webhook_secret
    app.state.webhook_verify = webhooks.stripe_verifier(secret.get_secret_value()) if secret else None
    return app
