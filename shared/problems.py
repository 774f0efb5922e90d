"""RFC 9457 problem details: the one shape of every error any service returns, over HTTP or NATS."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from eventsourcing import persistence
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from shared import db
from shared.inputs import InputError

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"
# Where Python's phrases are older than RFC 9110's names.
TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}


def title_of(status: int) -> str:
    if status in TITLES:
        return TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(
    status: int, detail: str | None = None, *, instance: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "about:blank", "title": title_of(status), "status": status}
    if detail:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return body


class Problem(Exception):
    def __init__(self, status: int, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail or title_of(status))
        self.status = status
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def response(self, instance: str) -> JSONResponse:
        body = problem_body(self.status, self.detail, instance=instance, **self.extra)
        return JSONResponse(body, status_code=self.status, headers=self.headers, media_type=MEDIA_TYPE)


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ProblemDetails(BaseModel):
    """What every 4xx and 5xx carries. Some problems add members (a 402 adds balance and available)."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Problem answers a route gives besides the ones every route of its kind gives (see shared/openapi.py)."""
    return {status: {"description": title_of(status)} for status in statuses}


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return exc.response(request.url.path)

    @app.exception_handler(InputError)
    async def _bad_input(request: Request, exc: InputError) -> JSONResponse:
        return Problem(400, str(exc)).response(request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only; a path served by two
            # routes (GET and POST) allows both.
            headers = {**(headers or {}), "Allow": ", ".join(_allowed(request))}
        return Problem(exc.status_code, str(exc.detail), headers=headers).response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": _message(e), "type": e.get("type", "")} for e in exc.errors()]
        return Problem(422, "The request is not valid.", errors=errors).response(request.url.path)

    async def _database_away(request: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL restarting or out of reach. Mostly nothing was committed; but one that died during a
        # COMMIT may have stored it without telling us (the fault suite saw holds kept so). Either way a
        # retry with the same Idempotency-Key applies the command or answers what it did.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        detail = ("The database is unavailable for a moment: retry with the same Idempotency-Key, which applies the"
                  " command or answers what it did.")  # fmt: skip
        problem = Problem(503, detail, headers={"Retry-After": "1"})
        return problem.response(request.url.path)

    eventsourcing_unavailable = (persistence.OperationalError, persistence.ConnectionUnavailableError,
                                 persistence.InterfaceError)  # fmt: skip
    for unavailable in (*db.UNAVAILABLE, *eventsourcing_unavailable):
        app.add_exception_handler(unavailable, _database_away)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return Problem(500, "An unexpected error occurred.").response(request.url.path)


def _message(error: Any) -> str:
    # Validator messages can quote the input; keep them readable and bounded.
    return str(error.get("msg", ""))[:300]


def _allowed(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)
