"""A probe of the whole path: a debit on an account of its own, followed until projections show it. The
fault cases time their recovery with it and the soak samples the projection lag with it."""

from __future__ import annotations

import time
import uuid

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer, signed_in


class Probe:
    """A debit on an account of its own, followed until projections show it: how long after a fault the
    whole path (a command, its event on the bus, the read model) works again."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.token, self.user_id = signed_in(system)
        granted = httpx.post(
            f"{system.url('ledger')}/api/accounts/{self.user_id}/grants",
            json={"amount": 1_000_000, "type": "ADMIN_ADJUSTMENT", "description": "probe"},
            headers={**bearer(admin_token(system)), "Idempotency-Key": str(uuid.uuid4())}, timeout=30,
        )  # fmt: skip
        assert granted.status_code == 201, granted.text

    def _debited(self, key: str) -> int | None:
        try:
            answer = httpx.post(
                f"{self.system.url('ledger')}/api/accounts/{self.user_id}/debits", json={"amount": 1},
                headers={**bearer(self.token), "Idempotency-Key": key}, timeout=5,
            )  # fmt: skip
        except httpx.HTTPError:
            return None
        return int(answer.json()["balance_after"]) if answer.status_code == 201 else None

    def _projected(self, balance: int) -> bool:
        try:
            url = f"{self.system.url('projections')}/api/user/credits"
            return bool(httpx.get(url, headers=bearer(self.token), timeout=5).json()["balance"] == balance)
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    def recovered(self, since: float) -> float:
        """Seconds from `since` until a debit made now is answered and seen in projections."""
        self.lag()
        return time.monotonic() - since

    def lag(self) -> float:
        """Debit until one is answered, then wait for projections to show it: seconds from the answer."""
        key, balance = str(uuid.uuid4()), None

        def debited() -> bool:
            nonlocal balance
            balance = self._debited(key)
            return balance is not None

        wait_until(debited, timeout=120, interval=0.1, what="a probe debit answered")
        assert balance is not None
        answered = time.monotonic()
        wait_until(lambda: self._projected(balance), timeout=120, interval=0.02, what="the probe debit projected")
        return time.monotonic() - answered
