"""What every route checks before it reads a body: a route that needs a token refuses a request
without one, and a body over the route's limit is a 413, whether it says its length or streams.

FastAPI reads and parses a body before it resolves dependencies (the token check among them), and
its own `max_body_size` answers a declared oversize with text/plain, so every router of ours is an
`APIRouter(route_class=GuardedRoute)`: the guard runs first, and the body is read through a counter.
A route that takes more than a JSON command says so: `openapi_extra=body_limit(bytes)`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from shared.auth import bearer_token, current_principal
from shared.inputs import JSON_BODY_LIMIT
from shared.problems import Problem

LIMIT_KEY = "x-max-body-bytes"


def body_limit(limit: int) -> dict[str, Any]:
    """`openapi_extra` of a route that takes bodies of up to `limit` bytes (documented for clients too)."""
    return {LIMIT_KEY: limit}


def limit_of(route: APIRoute) -> int:
    return int((route.openapi_extra or {}).get(LIMIT_KEY, JSON_BODY_LIMIT))


def needs_token(dependant: Dependant) -> bool:
    return any(d.call is current_principal or needs_token(d) for d in dependant.dependencies)


class GuardedRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        limit, token_needed = limit_of(self), needs_token(self.dependant)
        too_large = f"The request body is larger than this endpoint's limit of {limit} bytes."

        async def guarded(request: Request) -> Response:
            if token_needed and bearer_token(request.headers.get("authorization")) is None:
                refusal = Problem(401, "A bearer token is required.", headers={"WWW-Authenticate": "Bearer"})
                return refusal.response(request.url.path)
            declared = request.headers.get("content-length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > limit:
                return Problem(413, too_large).response(request.url.path)
            return await handler(Request(request.scope, _counted(request.receive, limit, too_large)))

        return guarded


def _counted(receive: Receive, limit: int, too_large: str) -> Receive:
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            # An HTTPException is what FastAPI lets out of its body parsing unchanged.
            raise HTTPException(413, too_large)
        return message

    return counted


def assert_guarded(app: FastAPI) -> None:
    """Every route goes through the guard: a router made without it would fail at start-up, not in production."""
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and not isinstance(route, GuardedRoute):
            raise TypeError(
                f"{context.path_format} is not a GuardedRoute: make its router with route_class=GuardedRoute"
            )
