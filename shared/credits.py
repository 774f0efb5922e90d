"""Credit rules shared by every service: what each operation costs and what each pack sells."""

from __future__ import annotations

from dataclasses import dataclass

WELCOME_BONUS = 10

OPERATION_COSTS: dict[str, int] = {
    "image_upload": 1,
    "image_transformation": 1,
    "video_processing": 2,
    "background_removal": 1,
    "image_generation": 3,
    "image_extension": 2,
}


@dataclass(frozen=True)
class CreditPackage:
    id: str
    name: str
    credits: int
    price_cents: int
    currency: str = "USD"
    popular: bool = False


PACKAGES: dict[str, CreditPackage] = {
    p.id: p
    for p in (
        CreditPackage("basic", "Basic Pack", 50, 999),
        CreditPackage("pro", "Pro Pack", 150, 2499, popular=True),
        CreditPackage("premium", "Premium Pack", 500, 7999),
    )
}
