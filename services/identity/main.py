"""Composition root of the identity service: `uvicorn --factory services.identity.main:create_app`."""

from __future__ import annotations

from fastapi import FastAPI

from services.identity import admin_api, api, webhooks
from services.identity.application import Identity, StreamEraser
from services.identity.devtokens import DevSigner
from shared.http import create_app as create_service_app
from shared.runtime import Runtime
from shared.settings import Settings

SERVICE = "identity"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # read from the environment

    async def start(app: FastAPI, rt: Runtime) -> None:
        identity = Identity(rt.pool, rt.start_outbox_relay())
        rt.spawn("stream-eraser", StreamEraser(rt.pool, rt.js, identity.erasures_due).run)
        app.state.identity = identity

    routers = [api.router, admin_api.router, webhooks.router]
    if settings.auth_mode == "dev":
        # The dev signer and its endpoints exist only in dev mode: in production there is no route.
        routers.append(api.dev_router)
    app = create_service_app(SERVICE, settings, start, routers)
    secret = settings.clerk_webhook_secret
    app.state.webhook_verify = webhooks.svix_verifier(secret.get_secret_value()) if secret else None
    if settings.auth_mode == "dev":
        app.state.signer = DevSigner(settings.data_dir / "dev-jwt-key.pem")
    return app
