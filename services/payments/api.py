"""Payments' HTTP API."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from shared.credits import PACKAGES
from shared.guard import GuardedRoute

router = APIRouter(tags=["payments"], route_class=GuardedRoute)


class CreditPackagePublic(BaseModel):
    id: str
    name: str
    credits: int
    price_cents: int
    currency: str
    popular: bool


@router.get("/api/credit-packages", response_model=list[CreditPackagePublic])
async def credit_packages() -> list[CreditPackagePublic]:
    return [CreditPackagePublic(**p.__dict__) for p in PACKAGES.values()]
