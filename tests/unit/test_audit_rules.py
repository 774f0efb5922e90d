"""The audit's rules on stream messages it is given: entries and balances recomputed, a broken balance chain
and one event id with two contents caught, a byte-for-byte copy skipped as readers skip it, and each source
compared entry by entry to the first difference."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from creditstream.audit import Account, apply, compare, compare_finance
from shared.finance import Book, Kind


def message(event_id: str, kind: str, **data: Any) -> dict[str, Any]:
    return {"id": event_id, "type": f"ledger.credits.{kind}", "occurred_at": "2026-12-07T10:00:00+00:00",
            "data": {"user_id": "u", **data}}  # fmt: skip


HISTORY = [
    message("e1", "granted", entry_type="BONUS", amount=10, balance_after=10),
    message("e2", "reserved", amount=3, reserved_after=3),
    message("e3", "captured", amount=3, balance_after=7, reserved_after=0),
    message("e4", "debited", entry_type="USAGE", amount=2, balance_after=5),
]
ENTRIES = [("e1", "BONUS", 10, 10), ("e3", "USAGE", -3, 7), ("e4", "USAGE", -2, 5)]


def replayed(messages: list[dict[str, Any]]) -> Account:
    accounts: defaultdict[str, Account] = defaultdict(Account)
    seen: dict[str, tuple[int, int]] = {}
    for seq, msg in enumerate(messages, start=1):
        apply(accounts, seen, json.dumps(msg).encode(), seq, Book())
    return accounts["u"]


def test_an_account_is_recomputed_from_its_messages() -> None:
    account = replayed(HISTORY)
    assert (account.entries, account.balance, account.reserved, account.broken_chain) == (ENTRIES, 5, 0, None)


def test_a_broken_chain_and_one_event_id_with_two_contents_are_caught() -> None:
    broken = [*HISTORY[:3], message("e4", "debited", entry_type="USAGE", amount=2, balance_after=6)]
    assert replayed(broken).broken_chain == "e4"
    forged = message("e1", "granted", entry_type="BONUS", amount=20, balance_after=20)
    assert replayed([*HISTORY, forged]).broken_chain == "e1 (two different events: 1, 5)"


def test_a_message_repeated_byte_for_byte_is_skipped_and_counted() -> None:
    accounts: defaultdict[str, Account] = defaultdict(Account)
    seen: dict[str, tuple[int, int]] = {}
    raws = [json.dumps(m).encode() for m in [*HISTORY, HISTORY[0], HISTORY[2], HISTORY[1]]]
    assert [apply(accounts, seen, raw, seq, Book()) for seq, raw in enumerate(raws, start=1)] == [False] * 4 + [
        True
    ] * 3
    assert (accounts["u"].entries, accounts["u"].balance, accounts["u"].broken_chain) == (ENTRIES, 5, None)


def test_each_source_is_compared_to_its_first_difference() -> None:
    stream = replayed(HISTORY)
    ledger = {"balance": 5, "reserved": 0, "entries": ENTRIES}
    projected = {"balance": 5, "reserved": 0, "last_seq": 4, "entries": ENTRIES}
    assert compare("u", stream, ledger, projected, 4) == []
    tampered = {**projected, "entries": [ENTRIES[0], ("e3", "USAGE", -2, 8), ENTRIES[2]]}
    [found] = compare("u", stream, ledger, tampered, 4)
    assert (found.what, found.first_event) == ("projections entries", "e3")
    missing = compare("u", stream, {**ledger, "entries": ENTRIES[:2], "balance": 7}, projected, 4)
    assert [(m.what, m.first_event) for m in missing] == [
        ("ledger event store entries", "e4"),
        ("ledger balance", "e4"),
    ]
    moved_on = {**ledger, "entries": [*ENTRIES, ("e9", "USAGE", -1, 4)], "balance": 4}
    assert compare("u", stream, moved_on, {**projected, "balance": 4, "last_seq": 9}, 4) == []  # audited to then


def test_the_finance_read_model_is_recounted_from_the_stream_and_a_wrong_cent_is_named() -> None:
    accounts: defaultdict[str, Account] = defaultdict(Account)
    book = Book()
    sold = message("p", "granted", entry_type="PURCHASE", amount=50, balance_after=50, lot_id="2", value_cents=999,
                   currency="USD")  # fmt: skip
    spent = message("s", "debited", entry_type="USAGE", amount=10, balance_after=40, lots={"2": 10})
    for seq, msg in enumerate([sold, spent], start=1):
        apply(accounts, {}, json.dumps(msg).encode(), seq, book)
    right = {("2026-12", "USD", Kind.SOLD): 999, ("2026-12", "USD", Kind.RECOGNISED): 200}
    assert compare_finance(book, right) == []
    (wrong,) = compare_finance(book, {**right, ("2026-12", "USD", Kind.RECOGNISED): 199})
    assert (wrong.user_id, wrong.what, wrong.expected, wrong.found) == (
        "finance",
        "2026-12 USD recognised cents",
        200,
        199,
    )
