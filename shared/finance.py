"""What credits are worth: prepaid credits are owed (deferred revenue) until they leave their lot, and what
leaving means for the money. Pure: stdlib only; the projections' finance read model and the audit that checks
it both count with it.

A lot of `credits` sold for `value_cents` (a purchase: what was paid; a subscription: the invoice; a bonus, a
promo code or an operator's grant: 0) is worth, once `taken` of its credits have left it,

    worth(value_cents, credits, taken) = round_half_up(value_cents * taken / credits)

and every movement out of a lot is the difference of two such figures (before and after it). So the rounding is
cumulative, never per movement: each movement is a whole number of cents, none is negative, and a lot whose
credits have all left has moved exactly its value, not a cent more or less, in any order of its movements.
Per currency and month: opening + sold - recognised - breakage - refunded = closing holds exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    SOLD = "sold"  # a paid lot granted: its value becomes owed
    RECOGNISED = "recognised"  # credits spent (debited, or captured from a hold): revenue
    BREAKAGE = "breakage"  # credits that left unspent: a paid lot's expiry, or an operator's taking them away
    REFUNDED = "refunded"  # credits taken back by a refund's claw-back: owed no more, the money went back


KINDS = tuple(Kind)
# Which kind of movement each credit entry that takes from lots is (its `entry_type`).
TAKEN_AS = {"USAGE": Kind.RECOGNISED, "EXPIRED": Kind.BREAKAGE, "ADMIN_ADJUSTMENT": Kind.BREAKAGE,
            "REFUND": Kind.REFUNDED}  # fmt: skip
NO_CURRENCY = "XXX"  # ISO 4217's code for "no currency": a value recorded without one


def worth(value_cents: int, credits: int, taken: int) -> int:
    """What `taken` of a lot's `credits` are worth, rounded half up (integers only: no float ever rounds)."""
    if credits <= 0:
        return 0
    return (2 * value_cents * taken + credits) // (2 * credits)


def movement_cents(value_cents: int, credits: int, taken_before: int, taken: int) -> int:
    """What `taken` more credits leaving a lot move, after `taken_before` left it."""
    return worth(value_cents, credits, taken_before + taken) - worth(value_cents, credits, taken_before)


def price_per_credit(value_cents: int, credits: int) -> str:
    """A lot's price per credit in minor units, to four places (shown, never counted with)."""
    return f"{value_cents / credits:.4f}" if credits else "0.0000"


@dataclass(frozen=True)
class Figures:
    """One currency's month: what was owed at its start and end, and what moved in it."""

    currency: str
    deferred_opening: int = 0
    sold: int = 0
    recognised: int = 0
    breakage: int = 0
    refunded: int = 0

    @property
    def deferred_closing(self) -> int:
        return self.deferred_opening + self.sold - self.recognised - self.breakage - self.refunded


def month_figures(totals: dict[tuple[str, str, Kind], int], month: str) -> list[Figures]:
    """The report for `month` (YYYY-MM) from totals by (month, currency, kind): every currency with anything
    owed or moved by the month's end."""
    by_currency: dict[str, dict[str, int]] = {}
    for (at, currency, kind), cents in totals.items():
        if at > month:
            continue
        figures = by_currency.setdefault(currency, {"deferred_opening": 0, **{k.value: 0 for k in KINDS}})
        if at == month:
            figures[kind.value] += cents
        else:
            figures["deferred_opening"] += cents if kind is Kind.SOLD else -cents
    return [Figures(currency, **figures) for currency, figures in sorted(by_currency.items())]


@dataclass
class _Lot:
    credits: int
    value_cents: int
    currency: str
    taken: int = 0


@dataclass
class Book:
    """The finance model kept in memory, from the LEDGER stream in order: what the audit recomputes the
    projections' tables with. Totals by (month, currency, kind); lots by (account, lot id)."""

    lots: dict[tuple[str, str], _Lot] = field(default_factory=dict)
    totals: dict[tuple[str, str, Kind], int] = field(default_factory=dict)

    def granted(self, account: str, lot_id: str, credits: int, value_cents: int, currency: str | None,
                month: str) -> None:  # fmt: skip
        if value_cents <= 0 or credits <= 0:
            return  # given, not sold: worth nothing as revenue
        lot = _Lot(credits, value_cents, (currency or NO_CURRENCY).upper())
        self.lots[(account, lot_id)] = lot
        self._add(month, lot.currency, Kind.SOLD, value_cents)

    def taken(self, account: str, entry_type: str, portions: dict[str, int], month: str) -> None:
        kind = TAKEN_AS.get(entry_type, Kind.RECOGNISED)
        for lot_id, credits in portions.items():
            lot = self.lots.get((account, lot_id))
            if lot is None or credits <= 0:
                continue  # a lot given, not sold
            cents = movement_cents(lot.value_cents, lot.credits, lot.taken, credits)
            lot.taken += credits
            self._add(month, lot.currency, kind, cents)

    def _add(self, month: str, currency: str, kind: Kind, cents: int) -> None:
        key = (month, currency, kind)
        self.totals[key] = self.totals.get(key, 0) + cents
