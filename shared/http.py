"""The FastAPI app every service is built on: problem details, tracing, /healthz and /readyz."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel

from shared import db, problems
from shared.access import ACCESS_DDL, AccessList
from shared.auth import TokenVerifier
from shared.guard import GuardedRoute, assert_guarded
from shared.openapi import documented
from shared.service_tokens import load_service_key
from shared.settings import Settings

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


class Status(BaseModel):
    status: str
    service: str


def create_app(service: str, settings: Settings, lifespan: Lifespan, routers: Sequence[APIRouter]) -> FastAPI:
    app = FastAPI(
        title=f"creditstream {service}",
        lifespan=_with_access_list(service, lifespan),
        # FastAPI's own server span per request continues the caller's trace (traceparent); a span per
        # dependency and per serialization on top cost more than the rest of a debit.
        telemetry={"operation_spans": False},
    )
    app.state.settings = settings
    app.state.service_key = load_service_key(settings)
    app.state.verifier = TokenVerifier(
        settings.jwks_url,
        audience=service,
        issuer=settings.issuer,
        authorized_parties=settings.authorized_parties,
        admin_clerk_ids=settings.admin_clerk_ids,
        service_key=app.state.service_key,
    )
    app.router.route_class = GuardedRoute
    problems.install(app)
    # The pages projections serves call every service from the browser: their origin, and only it, may.
    app.add_middleware(
        CORSMiddleware, allow_origins=settings.page_origins, allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"], max_age=600,
    )  # fmt: skip

    app.include_router(health(service))
    for router in routers:
        app.include_router(router)
    assert_guarded(app)
    app.openapi = documented(app)  # type: ignore[method-assign]
    return app


def health(service: str) -> APIRouter:
    """/healthz and /readyz, for a service and for a process that serves no API (the media worker) alike."""
    router = APIRouter(tags=["ops"], route_class=GuardedRoute)

    @router.get("/healthz")
    async def healthz() -> Status:
        """The process is up (its start-up is done); says nothing of what it depends on."""
        return Status(status="ok", service=service)

    @router.get("/readyz", response_model=Status, responses=problems.responses(503))
    async def readyz(request: Request) -> Any:
        """Ready for traffic: database and NATS reachable, no relay stuck, no dead-lettered message waiting."""
        runtime = getattr(request.app.state, "runtime", None)
        problem = "starting" if runtime is None else await runtime.not_ready()
        if problem:
            return problems.Problem(503, problem).response(request.url.path)
        return Status(status="ready", service=service)

    return router


def _with_access_list(service: str, lifespan: Lifespan) -> Lifespan:
    """Every service gets the deactivated-users table and its consumer, whatever its own lifespan does."""

    @asynccontextmanager
    async def wrapped(app: FastAPI) -> Any:
        async with lifespan(app):
            runtime = app.state.runtime
            await db.migrate(runtime.settings.database_url, service, ACCESS_DDL)
            access = AccessList(runtime.pool)
            runtime.consume(access.subscription(service))
            app.state.access = access
            yield

    return wrapped
