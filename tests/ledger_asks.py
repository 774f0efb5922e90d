"""Ledger commands as a caller asks them, for tests that drive the application directly: through the same
table of operations HTTP and NATS request/reply use (services/ledger/operations.py), with the request
bodies built unvalidated, so a test can hand the domain what a door would refuse and see it refuse too."""

from __future__ import annotations

from typing import Any

from services.ledger.commands import Command
from services.ledger.operations import OPERATIONS, Asked, command

# Keyword arguments that say who asks and when, not what (the rest is the request's body).
ASKED = ("request_id", "reservation_id", "admin_id", "member_id", "now")


def ask(name: str, user_id: str, key: str, **fields: Any) -> Command:
    """`name`'s command for `user_id` under the caller's `key`: `debit`, `grant` (`type` or `entry_type`),
    `reserve` (`now`), `capture` and `release` (`reservation_id`), `adjust` (`admin_id`); an organization's
    member spending its account names `member_id`."""
    asked: dict[str, Any] = {field: fields.pop(field) for field in ASKED if field in fields}
    if "entry_type" in fields:
        fields["type"] = fields.pop("entry_type")
    return command(name, OPERATIONS[name].body.model_construct(**fields), Asked(user_id, key, **asked))
