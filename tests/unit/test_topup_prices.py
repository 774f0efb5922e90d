"""What a custom top-up costs: its count times the price of the largest tier it reaches, rounded half up once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.credits import parse_price_table, topup, topup_price_cents

TABLE = parse_price_table("20:19.98,150:16.66,500:16")


@pytest.mark.parametrize(
    ("credits", "cents"),
    [
        (20, 400),  # 399.6: up
        (137, 2737),  # 2737.26: down
        (149, 2977),  # 2977.02
        (150, 2499),  # the Pro pack's price: the tier begins there
        (500, 8000),
        (10_000, 160_000),
    ],
)
def test_a_top_up_is_priced_by_its_tier_and_rounded_to_a_whole_cent(credits: int, cents: int) -> None:
    assert topup_price_cents(credits, TABLE) == cents


def test_half_a_cent_rounds_up_and_the_rest_is_exact() -> None:
    table = parse_price_table("1:0.5")
    assert [topup_price_cents(n, table) for n in (1, 2, 3)] == [1, 1, 2]
    assert topup(137, TABLE).price_cents == 2737 and topup(137, TABLE).credits == 137


def test_a_table_out_of_order_is_sorted_and_a_bad_one_refused() -> None:
    assert parse_price_table("500:16, 20:19.98") == ((20, Decimal("19.98")), (500, Decimal("16")))
    for bad in ("", "20:0", "x:1"):
        with pytest.raises(ValueError):
            parse_price_table(bad)
