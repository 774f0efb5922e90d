"""OpenAPI that a frontend can use: every problem answer documented as application/problem+json
with its schema, whatever FastAPI would have said about it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.utils import get_flat_params
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts

from shared.guard import LIMIT_KEY, limit_of, needs_token
from shared.inputs import JSON_VALUE, JSON_VALUE_SCHEMA
from shared.problems import MEDIA_TYPE, ProblemDetails, title_of

REF = "#/components/schemas/{model}"
# FastAPI's own 422 schema: replaced by Problem everywhere, so dropped from the document.
UNUSED = ("HTTPValidationError", "ValidationError")


def problems_of(route: APIRoute, path: str) -> Iterator[int]:
    """The problems any route of this kind can answer; routes declare their own besides."""
    if needs_token(route.dependant):
        yield from (401, 403, 503)
    if "{" in path:
        yield 404
    if get_flat_params(route.dependant) or route.body_field:
        yield 422
    if route.body_field:
        yield from (400, 413)  # a body that is not UTF-8 JSON; a body over the limit


def documented(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        problem = ProblemDetails.model_json_schema(ref_template=REF)
        components.update(problem.pop("$defs", {}))
        components["Problem"] = problem
        components[JSON_VALUE] = JSON_VALUE_SCHEMA
        for name in UNUSED:
            components.pop(name, None)
        for context in iter_route_contexts(app.routes):
            route, path = context.original_route, str(context.path_format)
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            for method in route.methods or ():
                operation = schema["paths"][path][method.lower()]
                if route.body_field:
                    operation[LIMIT_KEY] = limit_of(route)
                answers = operation["responses"]
                for status in problems_of(route, path):
                    answers.setdefault(str(status), {"description": title_of(status)})
                for status, answer in answers.items():
                    if status.isdigit() and int(status) >= 400:
                        answer["content"] = {MEDIA_TYPE: {"schema": {"$ref": REF.format(model="Problem")}}}
        app.openapi_schema = schema
        return schema

    return openapi
