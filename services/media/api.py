"""Media's HTTP API."""

from __future__ import annotations

from fastapi import APIRouter

from shared.credits import OPERATION_COSTS
from shared.guard import GuardedRoute

router = APIRouter(tags=["media"], route_class=GuardedRoute)


@router.get("/api/operations")
async def operations() -> dict[str, int]:
    """What each credit-costing operation costs."""
    return OPERATION_COSTS
