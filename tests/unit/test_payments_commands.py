"""Payments' commands and their use cases: every command is answered, by the use case that takes it."""

from __future__ import annotations

import inspect
from typing import Any, cast, get_type_hints

from services.payments.application import Payments
from services.payments.commands import Command


def test_every_command_is_answered_by_the_use_case_that_takes_that_command() -> None:
    payments = Payments(cast(Any, None), cast(Any, None), None)  # nothing is called: the registry only
    assert set(payments.command_handlers) == set(Command.__subclasses__())
    for command, use_case in payments.command_handlers.items():
        (taken,) = inspect.signature(use_case).parameters.values()
        assert get_type_hints(use_case)[taken.name] is command, use_case
