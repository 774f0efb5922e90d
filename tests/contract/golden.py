"""Golden forms: every event as this version writes it, kept in tests/contract/golden/ and never rewritten,
so a later change that cannot read what was written fails the suite (tests/contract/test_golden_forms.py).

- `bus/<subject>.v<N>.json`: an envelope of each contract at each version that was ever written.
- `ledger/history.json`: one account's stored history holding every kind of ledger event (topic and state as
  the event store keeps them), and the account it replays to.

`python -m tests.contract.golden` writes what is missing (a new contract, a new version, a new kind of ledger
event: commit the files it writes); it never touches a file that exists.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from eventsourcing.domain import Aggregate

from services.ledger import commands as lc
from services.ledger.application import Ledger
from services.ledger.domain import CreditAccount
from shared.contracts import Envelope, EventData
from tests.ledger_asks import ask

GOLDEN = Path(__file__).with_name("golden")
BUS = GOLDEN / "bus"
HISTORY = GOLDEN / "ledger" / "history.json"
USER = "0b5e1d2c-7f3a-4c8e-9a61-2d4f8b7c9e10"
AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def bus_file(subject: str, version: int) -> Path:
    return BUS / f"{subject}.v{version}.json"


def envelope_of(body: EventData) -> Envelope:
    return Envelope.wrap(
        body, user_id=USER, causation_id="cause-1", event_id=uuid.UUID(int=len(body.type)), occurred_at=AT
    )


def stored_kinds() -> set[str]:
    """The topic of every kind of event an account stores."""
    kinds = {v for v in vars(CreditAccount).values() if isinstance(v, type) and issubclass(v, Aggregate.Event)}
    # eventsourcing's own bases of each aggregate, never stored as themselves (an account begins with Opened)
    kinds -= {CreditAccount.Event, CreditAccount.Created}
    return {f"{k.__module__}:{k.__qualname__}" for k in kinds}


def histories() -> list[Path]:
    return sorted(HISTORY.parent.glob("history*.json"))


def covered_kinds() -> set[str]:
    return {e["topic"] for path in histories() for e in json.loads(path.read_text())["events"]}


def in_memory() -> Ledger:
    return Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def history() -> dict[str, Any]:
    """An account that stored every kind of event, by the commands a user, payments and the sweeper ask."""
    ledger = in_memory()
    soon = AT + timedelta(days=10)

    def run(*asked: lc.Command) -> None:
        ledger.execute_batch(list(asked))

    run(lc.Welcome(user_id=USER, key="welcome"))
    run(ask("grant", USER, "bought", entry_type="PURCHASE", amount=50, expires_at=soon))
    run(ask("debit", USER, "spent", amount=5))
    run(ask("debit", USER, "too-much", amount=1_000))
    run(ask("reserve", USER, "hold", amount=3, ttl_seconds=600, now=AT))
    run(ask("reserve", USER, "hold-too-much", amount=1_000, ttl_seconds=600, now=AT))
    account = ledger.account(USER)
    assert account is not None
    [held] = account.reservations
    run(ask("capture", USER, "taken", reservation_id=held, amount=2))
    run(ask("reserve", USER, "hold-2", amount=1, ttl_seconds=600, now=AT))
    account = ledger.account(USER)
    assert account is not None
    [second] = account.reservations
    run(ask("release", USER, "let-go", reservation_id=second))
    run(lc.SetRechargeThreshold(user_id=USER, key="watch", threshold=40, at=AT))
    run(ask("debit", USER, "below", amount=20))
    account = ledger.account(USER)
    assert account is not None
    lot = next(lot_id for lot_id, lot in account.lots.items() if lot.expires_at is not None)
    run(lc.WarnExpiring(user_id=USER, key="warn", lot_id=lot))
    run(lc.ExpireLot(user_id=USER, key="expire", lot_id=lot, now=soon + timedelta(seconds=1)))
    run(lc.WarnExpiring(user_id=USER, key="warn-late", lot_id=lot))  # nothing left to warn of: noted
    run(lc.SetStatus(user_id=USER, key="off", active=False, at=AT))
    run(lc.SetStatus(user_id=USER, key="on", active=True, at=AT + timedelta(seconds=1)))
    # As an organization's account: a member's limit, their spending within it and past it.
    member = "0b7e6f3c-5d2a-4e1b-9c8d-7a6f5e4d3c2b"
    run(lc.SetMemberLimit(user_id=USER, key="limit", member_id=member, monthly_credits=4, admin_id="admin"))
    run(lc.Debit(user_id=USER, key="member-spent", entry_type="USAGE", amount=2, member_id=member, asked_at=AT))
    run(lc.Reserve(user_id=USER, key="member-hold", reservation_id="r-m", amount=1, ttl_seconds=600,
                   expires_at=AT + timedelta(seconds=600), member_id=member, asked_at=AT))  # fmt: skip
    run(lc.Capture(user_id=USER, key="member-taken", reservation_id="r-m", amount=1, asked_at=AT))
    run(lc.Debit(user_id=USER, key="member-over", entry_type="USAGE", amount=2, member_id=member, asked_at=AT))
    # The account's own monthly cap, and a spend past it.
    run(lc.SetUsageCap(user_id=USER, key="cap", monthly_credits=4, set_by="owner"))
    run(lc.Debit(user_id=USER, key="capped", entry_type="USAGE", amount=2, asked_at=AT))
    events = [
        {"version": item.originator_version, "topic": item.topic, "state": item.state.decode()}
        for item in ledger.recorder.select_events(uuid.UUID(USER))
    ]
    final = ledger.account(USER)
    assert final is not None
    return {"user_id": USER, "events": events, "account": account_view(final)}


def account_view(account: CreditAccount) -> dict[str, Any]:
    return {
        "balance": account.balance,
        "reserved": account.reserved,
        "active": account.active,
        "recharge_threshold": account.recharge_threshold,
        "lots": {k: [lot.amount, lot.remaining] for k, lot in sorted(account.lots.items())},
        # Only an organization's account has members: histories written before them show none.
        **({"members": {k: [m.limit, m.month, m.used] for k, m in sorted(account.members.items())}}
           if account.members else {}),
        # Only an account with a cap shows its spending: histories written before caps show none.
        **({"usage": [account.usage.limit, account.usage.month, account.usage.used]}
           if account.usage.limit is not None else {}),
    }  # fmt: skip


def write_missing() -> list[Path]:
    from tests.contract.test_event_contracts import sample

    written = []
    for subject, model in sorted(EventData.registry.items()):
        path = bus_file(subject, model.schema_version)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(json.loads(envelope_of(sample(model)).to_bytes()), indent=2) + "\n")
            written.append(path)
    if stored_kinds() - covered_kinds():
        # A new kind of event: a history of its own beside the older ones, which stay as they were written.
        path = HISTORY if not HISTORY.exists() else HISTORY.with_name(f"history-{len(histories()) + 1}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(history(), indent=2) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_missing():
        print(f"wrote {path}", file=sys.stderr)
