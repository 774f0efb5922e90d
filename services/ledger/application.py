"""The ledger application: one verb per command, each load → act → save, retried on conflict."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import IntegrityError

from services.ledger.domain import CreditAccount
from shared.credits import WELCOME_BONUS

MAX_ATTEMPTS = 20


class ConcurrencyError(Exception):
    """The account kept changing under us for MAX_ATTEMPTS tries."""


@dataclass(frozen=True)
class Outcome:
    account: CreditAccount
    event: DomainEvent
    replayed: bool


class Ledger(Application):
    name = "Ledger"
    snapshotting_intervals = {CreditAccount: 500}

    def account(self, user_id: str) -> CreditAccount | None:
        try:
            return self.repository.get(uuid.UUID(user_id))  # type: ignore[return-value]
        except AggregateNotFoundError:
            return None

    def execute(
        self,
        user_id: str,
        key: str,
        fingerprint: str,
        act: Callable[[CreditAccount], Any],
        *,
        create: bool = True,
    ) -> Outcome:
        """Apply `act` once per idempotency key; a retried key returns the first outcome.

        Optimistic concurrency: a save that lost a race raises IntegrityError, and we reload and try
        again, so two ledger processes never both apply one command, nor lose one.
        """
        for _ in range(MAX_ATTEMPTS):
            account = self.account(user_id)
            if account is None:
                if not create:
                    raise AggregateNotFoundError(user_id)
                account = CreditAccount(user_id=user_id)
            version = account.outcome(key, fingerprint)
            if version is not None:
                return Outcome(account, self._event_at(account.id, version), replayed=True)
            act(account)
            try:
                recordings = self.save(account)
            except IntegrityError:
                continue
            return Outcome(account, recordings[-1].domain_event, replayed=False)
        raise ConcurrencyError(f"account {user_id} is too contended")

    def _event_at(self, account_id: uuid.UUID, version: int) -> DomainEvent:
        return next(iter(self.repository.event_store.get(account_id, gt=version - 1, lte=version)))

    def welcome(self, user_id: str, *, cause_id: str | None, correlation_id: str | None) -> Outcome:
        """The welcome bonus: one per account, whatever delivers the registration and how often."""
        key = "bonus:welcome"
        return self.execute(
            user_id,
            key,
            key,
            lambda account: account.grant(
                entry_type="BONUS",
                amount=WELCOME_BONUS,
                key=key,
                fingerprint=key,
                description="Welcome bonus",
                metadata={},
                cause_id=cause_id,
                correlation_id=correlation_id,
            ),
        )
