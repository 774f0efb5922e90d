"""Media's HTTP API."""

from __future__ import annotations

from fastapi import APIRouter

from shared.credits import OPERATION_COSTS

router = APIRouter(tags=["media"])


@router.get("/api/operations")
async def operations() -> dict[str, int]:
    """What each credit-costing operation costs."""
    return OPERATION_COSTS
