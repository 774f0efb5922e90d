"""Credit rules shared by every service: what each operation costs and what each pack sells."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

WELCOME_BONUS = 10
# Available credit below this is announced (ledger.balance.low), once per crossing.
LOW_BALANCE_THRESHOLD = 5
# Credit that expires within this many days is announced (ledger.credits.expiring), once per lot.
EXPIRY_WARNING_DAYS = 7

OPERATION_COSTS: dict[str, int] = {
    "image_upload": 1,
    "image_transformation": 1,
    "video_processing": 2,
    "background_removal": 1,
    "image_generation": 3,
    "image_extension": 2,
}

# How long a job's credit hold lasts before the ledger releases it unsettled: the operation's worst case on one
# worker with room to queue. A video (up to 10 minutes, transcoded) gets far longer than an image.
HOLD_SECONDS: dict[str, int] = {
    "image_upload": 300,
    "image_transformation": 300,
    "video_processing": 3600,
    "background_removal": 300,
    "image_generation": 300,
    "image_extension": 300,
}


@dataclass(frozen=True)
class Offer:
    """What a pack and a plan both are: so many credits for a price."""

    id: str
    name: str
    credits: int
    price_cents: int
    currency: str = "USD"


@dataclass(frozen=True)
class CreditPackage(Offer):
    popular: bool = False


PACKAGES: dict[str, CreditPackage] = {
    p.id: p
    for p in (
        CreditPackage("basic", "Basic Pack", 50, 999),
        CreditPackage("pro", "Pro Pack", 150, 2499, popular=True),
        CreditPackage("premium", "Premium Pack", 500, 7999),
    )
}


@dataclass(frozen=True)
class SubscriptionPlan(Offer):
    """Credits every billing period; they expire at the period's end unless the plan rolls them over."""

    interval: str = "month"
    rolls_over: bool = False


PLANS: dict[str, SubscriptionPlan] = {
    p.id: p
    for p in (
        SubscriptionPlan("starter", "Starter", 100, 900),
        SubscriptionPlan("creator", "Creator", 400, 2900),
    )
}


# A custom top-up: any number of credits between the settings' bounds, priced by the price table.
TOPUP = "custom"
# (from how many credits, cents per credit): the price of the largest tier a top-up reaches; the packs' own
# prices per credit (Basic 19.98, Pro 16.66, Premium 16).
PriceTable = tuple[tuple[int, Decimal], ...]


def parse_price_table(text: str) -> PriceTable:
    """`20:19.98,150:16.66,500:16` → ((20, 19.98), (150, 16.66), (500, 16)), by tier."""
    tiers = []
    for part in text.split(","):
        least, _, cents = part.strip().partition(":")
        tiers.append((int(least), Decimal(cents)))
    if not tiers or any(price <= 0 for _, price in tiers):
        raise ValueError("a price table is tiers of `credits:cents per credit`, each price above 0")
    return tuple(sorted(tiers))


def topup_price_cents(credits: int, table: PriceTable) -> int:
    """Whole cents for `credits`: their count times the per-credit price of the largest tier they reach (the
    first tier's below it), rounded half up to a cent, once, on the total."""
    price = next((cents for least, cents in reversed(table) if credits >= least), table[0][1])
    return int((price * credits).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def topup(credits: int, table: PriceTable) -> CreditPackage:
    return CreditPackage(TOPUP, f"Top-up of {credits} credits", credits, topup_price_cents(credits, table))
