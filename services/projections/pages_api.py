"""The dashboard and credits pages: one HTML shell, a script and a stylesheet served as they are (no build
step). The page learns where the other services listen from the config block in its HTML; it calls them
from the browser (they allow the projections origin: shared/http.py)."""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from shared.guard import GuardedRoute
from shared.problems import Problem
from shared.settings import SERVICES, Settings

router = APIRouter(route_class=GuardedRoute, include_in_schema=False)
HERE = Path(__file__).with_name("pages")
ASSETS = {"app.js": "text/javascript", "admin.js": "text/javascript", "app.css": "text/css"}
TITLES = {"dashboard": "Dashboard", "credits": "Credits"}


@cache
def _file(name: str) -> str:
    return (HERE / name).read_text()


def page_config(settings: Settings) -> dict[str, object]:
    """What the page needs to know: the services' ports (on the host it was loaded from), the sign-in kind,
    and whether the dev test-card form may pay (only against localstripe)."""
    return {
        "ports": {name: settings.port(name) for name in SERVICES},
        "auth_mode": settings.auth_mode,
        "dev_pay": settings.auth_mode == "dev" and settings.stripe_api_base is not None,
    }


def _config(request: Request) -> str:
    return json.dumps(page_config(request.app.state.settings)).replace("</", "<\\/")


def _render(request: Request, name: Literal["dashboard", "credits"]) -> HTMLResponse:
    config = _config(request)
    body = (
        _file("app.html")
        .replace("__TITLE__", html.escape(TITLES[name]))
        .replace("__CONFIG__", config)
        .replace("__PAGE__", name)
        .replace("__DASHBOARD_CURRENT__", 'aria-current="page"' if name == "dashboard" else "")
        .replace("__CREDITS_CURRENT__", 'aria-current="page"' if name == "credits" else "")
    )
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard_page(request: Request) -> HTMLResponse:
    return _render(request, "dashboard")


@router.get("/credits", response_class=HTMLResponse)
async def credits_page(request: Request) -> HTMLResponse:
    return _render(request, "credits")


@router.get("/admin", response_class=HTMLResponse)
async def admin_page(request: Request) -> HTMLResponse:
    """The operators' console. The page holds nothing secret: what it shows and does, the services' admin
    APIs answer only to an admin's token (a user's gets 403, and the page says so)."""
    body = _file("admin.html").replace("__CONFIG__", _config(request))
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/pages/{asset}")
async def asset(asset: str) -> Response:
    if asset not in ASSETS:
        raise Problem(404, f"No page asset {asset!r}.")
    return Response(_file(asset), media_type=ASSETS[asset], headers={"Cache-Control": "no-cache"})
