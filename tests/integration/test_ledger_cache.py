"""Each ledger process keeps the accounts it wrote in memory; another process writing to the same
account must never leave it answering from stale state (a refusal computes no event, so no
optimistic-concurrency conflict would ever correct it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from services.ledger import commands, store
from services.ledger.answers import answer
from services.ledger.application import Ledger
from tests.ledger_asks import ask

T0 = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture
def two_ledgers(database_url: str) -> Iterator[tuple[Ledger, Ledger]]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    env = {**store.eventsourcing_env(database_url), "POSTGRES_SCHEMA": schema}
    first, second = Ledger(env=env), Ledger(env=env)
    yield first, second
    first.close()
    second.close()


def status(user: str, key: str, *, active: bool, minute: int) -> commands.SetStatus:
    return commands.SetStatus(user_id=user, key=key, active=active, at=T0.replace(minute=minute))


def debit(user: str, amount: int, key: str) -> commands.Command:
    return ask("debit", user, amount=amount, description="", metadata={}, key=key, request_id=None)


def test_an_account_cached_by_one_process_catches_up_with_what_another_wrote(
    two_ledgers: tuple[Ledger, Ledger],
) -> None:
    a, b = two_ledgers
    user = str(uuid.uuid4())
    grant = ask("grant", user, entry_type="BONUS", amount=10, description="", metadata={}, key="g", request_id=None)
    a.execute_batch([grant, status(user, "off", active=False, minute=1)])  # `a` now holds it: inactive
    assert answer(a.execute_batch([debit(user, 1, "d1")])[0]).status == 403

    b.execute_batch([status(user, "on", active=True, minute=2), debit(user, 9, "by-b")])  # `b` reactivates, spends 9

    # `a` answers from the account as it is now: active, 1 credit left.
    assert answer(a.execute_batch([debit(user, 2, "d2")])[0]).status == 402
    spent = answer(a.execute_batch([debit(user, 1, "d3")])[0])
    assert (spent.status, spent.body["balance_after"]) == (201, 0)
    account = b.account(user)
    assert account is not None and (account.balance, account.active) == (0, True)


def test_a_hold_made_by_another_process_can_be_captured_where_the_account_is_cached(
    two_ledgers: tuple[Ledger, Ledger],
) -> None:
    a, b = two_ledgers
    user = str(uuid.uuid4())
    a.execute_batch([ask("grant", user, entry_type="BONUS", amount=5, description="", metadata={}, key="g",
                                    request_id=None)])  # fmt: skip
    held = b.execute_batch([ask("reserve", user, amount=3, ttl_seconds=60, now=T0, key="r", request_id=None)])
    rid = answer(held[0]).body["reservation_id"]
    taken = a.execute_batch([ask("capture", user, reservation_id=rid, amount=None, description="", key="c",
                                              request_id=None)])  # fmt: skip
    assert (answer(taken[0]).status, answer(taken[0]).body["balance"]) == (200, 2)
