"""The FastAPI app every service is built on: its runtime (database, NATS, background loops) opened and
closed in one lifespan written here once, problem details, tracing, /healthz and /readyz. A service says
only what it starts on its runtime (`start`) and which routes it serves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from shared import clock, metrics, problems, runtime, telemetry
from shared.access import AccessList
from shared.auth import TokenVerifier, privileged
from shared.bus import deadletters
from shared.guard import GuardedRoute, assert_guarded
from shared.limits import RateLimiter, RateLimitHeaders, policies
from shared.openapi import documented
from shared.scopes import Scope
from shared.service_tokens import load_service_key
from shared.settings import Settings

# What a service starts on its runtime once it is open: its relays, consumers and loops, and what its routes
# find on app.state.
Start = Callable[[FastAPI, runtime.Runtime], Awaitable[None]]


class Status(BaseModel):
    status: str
    service: str


class Alarms(BaseModel):
    service: str
    alarms: list[str]  # each as written for an operator: what is wrong and what to do


def create_app(service: str, settings: Settings, start: Start, routers: Sequence[APIRouter]) -> FastAPI:
    clock.move(settings.clock_offset_seconds)
    """A service: on a schema that has its migrations (shared/migrations.py), `start` run on its runtime, the
    deactivated-users list and the per-user limits every service keeps, and `routers` behind the bearer-token
    checks."""
    telemetry.setup(service)

    async def started(app: FastAPI, rt: runtime.Runtime) -> None:
        await start(app, rt)
        app.state.limiter = RateLimiter(rt.pool, policies(settings))
        access = AccessList(rt.pool, erasers=rt.erasers)
        rt.consume(access.subscription(service))
        app.state.access = access

    app = FastAPI(
        title=f"creditstream {service}",
        lifespan=_lifespan(service, settings, started),
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

    app.add_middleware(RateLimitHeaders)
    app.include_router(health(service))
    app.include_router(alarms(service))
    for router in routers:
        app.include_router(router)
    assert_guarded(app)
    app.openapi = documented(app)  # type: ignore[method-assign]
    return app


def health(service: str) -> APIRouter:
    """/healthz, /readyz and /metrics, for a service and for a process that serves no API (the media worker) alike."""
    router = APIRouter(tags=["ops"], route_class=GuardedRoute)

    @router.get("/healthz")
    async def healthz() -> Status:
        """The process is up (its start-up is done); says nothing of what it depends on."""
        return Status(status="ok", service=service)

    @router.get("/metrics", response_class=PlainTextResponse)
    async def scrape(request: Request) -> Response:
        """This process's metrics in Prometheus text format (shared/metrics.py): no token, as a scraper has
        none; no label names a user."""
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is not None:
            await runtime.sample()
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    @router.get("/readyz", response_model=Status, responses=problems.responses(503))
    async def readyz(request: Request) -> Any:
        """Ready for traffic: database and NATS reachable, the background loops running. A parked message or a
        stuck relay is an alarm (GET /alarms), not a reason to take a copy out of service."""
        runtime = getattr(request.app.state, "runtime", None)
        problem = "starting" if runtime is None else await runtime.not_ready()
        if problem:
            return problems.Problem(503, problem).response(request.url.path)
        return Status(status="ready", service=service)

    return router


class DeadLetterView(BaseModel):
    seq: int = Field(description="its sequence on DEADLETTER: what a re-drive names")
    consumer: str = Field(description="the durable consumer that gave up on it")
    subject: str = Field(description="where it was published first")
    origin_stream: str
    origin_seq: int
    reason: str = Field(description="why the consumer gave up")
    event_id: str | None
    event_type: str | None

    @classmethod
    def of(cls, letter: deadletters.DeadLetter) -> DeadLetterView:
        event = letter.event
        kept = {k: v for k, v in vars(letter).items() if k != "data"}
        return cls(**kept, event_id=_text(event.get("id")), event_type=_text(event.get("type")))


def _text(value: object) -> str | None:
    return None if value is None else str(value)[:200]


class DeadLetters(BaseModel):
    service: str
    letters: list[DeadLetterView] = Field(description="the oldest first, at most `limit`")


class Redriven(BaseModel):
    seq: int
    consumer: str
    status: Literal["applied"]


def alarms(service: str) -> APIRouter:
    """What an operator acts on, for admins and service tokens holding `<service>:alarms`: the alarms, and the
    dead letters of this service's consumers with their re-drive (the same as `creditstream deadletters`)."""
    # In the routes' dependencies: an annotation naming `service` could not be resolved (annotations are strings).
    router = APIRouter(tags=["ops"], route_class=GuardedRoute, dependencies=[privileged(Scope(f"{service}:alarms"))])

    @router.get("/alarms")
    async def raised(request: Request) -> Alarms:
        """What an operator must act on in this copy: dead-lettered messages, a stuck relay, background loops
        failing, operations NATS refused. Empty when all is well."""
        runtime = getattr(request.app.state, "runtime", None)
        return Alarms(service=service, alarms=[] if runtime is None else await runtime.problems())

    @router.get("/dead-letters", responses=problems.responses(503))
    async def parked(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> DeadLetters:
        """The messages this service's consumers gave up on, oldest first."""
        rt = _started(request)
        found: list[DeadLetterView] = []
        for durable in rt.redrivers:
            found += [DeadLetterView.of(letter) for letter in await deadletters.listing(rt.js, durable, limit)]
        return DeadLetters(service=service, letters=sorted(found, key=lambda v: v.seq)[:limit])

    @router.post("/dead-letters/{seq}/redrive", responses=problems.responses(404, 409, 503))
    async def redrive(request: Request, seq: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> Redriven:
        """Apply one dead letter through the consumer that parked it (whose inbox makes a second application
        a no-op), then delete it. After the fix it waited for: a 409 says why it still fails."""
        rt = _started(request)
        for durable, redriver in rt.redrivers.items():
            status, reason = await redriver.redrive(seq)
            if status == "applied":
                return Redriven(seq=seq, consumer=durable, status="applied")
            if status == "failed":
                raise problems.Problem(409, f"Dead letter {seq} failed again in {durable}: {reason}")
            if status == "missing":
                break
        raise problems.Problem(404, f"No dead letter {seq} of {service}'s consumers (re-driven already?).")

    return router


def _started(request: Request) -> runtime.Runtime:
    rt: runtime.Runtime | None = getattr(request.app.state, "runtime", None)
    if rt is None:
        raise problems.Problem(503, "Starting: try again in a moment.")
    return rt


def create_worker_app(name: str, schema: str, settings: Settings, start: Start) -> FastAPI:
    """A process that serves no API (the media worker): its runtime on `schema`, and its health routes."""
    telemetry.setup(name)
    app = FastAPI(title=f"creditstream {name}", lifespan=_lifespan(schema, settings, start), openapi_url=None)
    app.include_router(health(name))
    return app


def _lifespan(schema: str, settings: Settings, start: Start) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running(schema, settings) as rt:
            await start(app, rt)
            app.state.runtime = rt  # last: /readyz answers "starting" until all is started
            yield

    return lifespan
