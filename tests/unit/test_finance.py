"""What credits are worth (shared/finance.py): the rounding that loses no cent, and a month's figures."""

from __future__ import annotations

import itertools
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given
from hypothesis import strategies as st

from shared import finance
from shared.finance import Book, Kind


def by_hand(value: int, credits: int, taken: int) -> int:
    """The stated rule, computed another way: V * n / C, rounded half up to a whole cent."""
    return int((Decimal(value) * taken / credits).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_a_basic_packs_credits_are_worth_its_price_to_the_cent_one_by_one_or_all_at_once() -> None:
    assert finance.worth(999, 50, 1) == 20  # 19.98 rounds up
    assert finance.worth(999, 50, 10) == 200  # 199.8
    assert finance.worth(999, 50, 25) == 500  # 499.5: half up
    assert sum(finance.movement_cents(999, 50, n, 1) for n in range(50)) == 999
    assert finance.price_per_credit(999, 50) == "19.9800"


@given(
    value=st.integers(min_value=0, max_value=10_000_000),
    credits=st.integers(min_value=1, max_value=100_000),
    cuts=st.lists(st.floats(min_value=0, max_value=1, allow_nan=False), max_size=12),
)
def test_movements_out_of_a_lot_are_whole_never_negative_and_add_up_to_its_value(
    value: int, credits: int, cuts: list[float]
) -> None:
    points = sorted({0, credits, *(int(c * credits) for c in cuts)})
    moved = [finance.movement_cents(value, credits, a, b - a) for a, b in itertools.pairwise(points)]
    assert all(cents >= 0 for cents in moved)
    assert sum(moved) == value  # a lot whose credits all left moved exactly its value
    for n in points:
        assert finance.worth(value, credits, n) == by_hand(value, credits, n)


def test_a_months_figures_open_with_what_was_owed_and_close_by_the_identity() -> None:
    book = Book()
    book.granted("a", "2", 50, 999, "usd", "2026-11")
    book.taken("a", "USAGE", {"2": 10}, "2026-11")  # 200 recognised in November
    book.granted("a", "3", 100, 900, "USD", "2026-12")
    book.taken("a", "USAGE", {"2": 1, "3": 3}, "2026-12")  # 20 (200 → 220) + 27
    book.taken("a", "EXPIRED", {"3": 97}, "2026-12")  # the rest of 900
    book.taken("a", "REFUND", {"2": 39}, "2026-12")  # 999 - 220
    book.granted("a", "4", 15, 0, None, "2026-12")  # a promo lot: worth nothing
    book.taken("a", "USAGE", {"4": 15}, "2026-12")
    (november,) = finance.month_figures(book.totals, "2026-11")
    assert (november.currency, november.deferred_opening, november.sold, november.recognised) == ("USD", 0, 999, 200)
    assert november.deferred_closing == 799
    (december,) = finance.month_figures(book.totals, "2026-12")
    assert (december.deferred_opening, december.sold, december.recognised, december.breakage, december.refunded) == (
        799, 900, 47, 873, 779,
    )  # fmt: skip
    assert december.deferred_closing == 0  # everything sold is spent, expired or refunded
    assert finance.month_figures(book.totals, "2026-10") == []
    assert book.totals[("2026-12", "USD", Kind.BREAKAGE)] == 873
