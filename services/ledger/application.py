"""The ledger application: commands are load → act → save, several at once, retried on conflict.

Every write goes through `execute_batch`: it loads each account a batch touches once, applies the
batch's commands in order (each through its handler in COMMAND_HANDLERS), and saves all accounts in
ONE `save()` (one transaction under the recorder's table lock). A command is plain data, so a batch
can apply it again after a conflict.
"""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import CanMutateAggregate, DomainEventProtocol
from eventsourcing.persistence import IntegrityError, JSONTranscoder, StoredEvent, Transcoding
from psycopg import Connection

from services.ledger import store
from services.ledger.commands import COMMAND_HANDLERS, Command
from services.ledger.domain import CreditAccount, IdempotencyRecord
from services.ledger.values import AccountNotFoundError, Allowance, Hold, LedgerError, Lot

MAX_ATTEMPTS = 20
# Accounts the writer keeps in memory (a few KB each: an account's state is the size of its open holds).
ACCOUNT_CACHE_SIZE = 20_000
# Any stored event of the ledger's, as eventsourcing gives it back.
AnyEvent = DomainEventProtocol[uuid.UUID]

__all__ = ["AnyEvent", "Command", "ConcurrencyError", "Ledger", "Outcome", "Result"]


class ConcurrencyError(Exception):
    """The accounts kept changing under us for MAX_ATTEMPTS tries."""


@dataclass(frozen=True)
class Outcome:
    account: CreditAccount
    event: AnyEvent
    replayed: bool


Result = Outcome | LedgerError


class AsDict(Transcoding):
    """How a value of the account (a hold, a lot, a member) is kept in its snapshot: its fields, one level deep
    (what they hold, datetimes and dicts of ints, the transcoder encodes itself)."""

    def __init__(self, kind: type[Hold] | type[Lot] | type[Allowance], name: str) -> None:
        self.type, self.name = kind, name

    def encode(self, obj: Hold | Lot | Allowance) -> dict[str, Any]:
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}

    def decode(self, data: dict[str, Any]) -> Hold | Lot | Allowance:
        return self.type(**data)


class Ledger(Application):
    name = "Ledger"
    snapshotting_intervals = {CreditAccount: 200}

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(AsDict(Hold, "ledger_hold"))
        transcoder.register(AsDict(Lot, "ledger_lot"))
        transcoder.register(AsDict(Allowance, "ledger_member"))

    def account(self, user_id: str) -> CreditAccount | None:
        try:
            return self.repository.get(uuid.UUID(user_id))
        except AggregateNotFoundError:
            return None

    def history(
        self, user_id: str, *, before: int | None, limit: int, keep: Callable[[Any], bool], scan: int = 5000
    ) -> tuple[list[AnyEvent], int | None]:
        """Newest-first events that `keep` accepts, below version `before`, read from the event store.

        Returns the page and the cursor for the next one (None at the first event). A page stops
        after scanning `scan` events, so a rare filter costs bounded work per request.
        """
        found: list[AnyEvent] = []
        cursor = before
        scanned = 0
        while len(found) < limit and scanned < scan and (cursor is None or cursor > 1):
            lte = None if cursor is None else cursor - 1
            page = min(scan, 2 * limit + 50)
            stored = self.recorder.select_events(uuid.UUID(user_id), lte=lte, desc=True, limit=page)
            if not stored:
                return found, None
            for item in stored:
                scanned += 1
                cursor = item.originator_version
                event = self.mapper.to_domain_event(item)
                if keep(event):
                    found.append(event)
                    if len(found) == limit:
                        break
        return found, (cursor if cursor is not None and cursor > 1 else None)

    def execute_batch(self, commands: Sequence[Command]) -> list[Result]:
        """Apply each command once per idempotency key; a retried key gets its first outcome.

        Accounts and the commands' idempotency records are saved together in one `save()`. A save
        that lost a race with another ledger process (same account version, or same key recorded)
        raises IntegrityError: the batch's accounts are forgotten, reloaded and the batch re-applied,
        so no command is applied twice or lost. Domain refusals come back as LedgerError values in
        the command's place; infrastructure errors raise for the whole batch.
        """
        for attempt in range(MAX_ATTEMPTS):
            batch = _Batch(self, commands)
            try:
                marks = [batch.apply(command) for command in commands]
                recordings = self.save(*batch.dirty()) if batch.dirty() else []
            except IntegrityError:
                self._written.forget(batch.account_ids)
                # Jittered backoff: two processes retrying in lockstep would collide again.
                time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 7)))
                continue
            except BaseException:
                self._written.forget(batch.account_ids)  # they may hold events that were never saved
                raise
            self._written.keep(batch.accounts())
            events = (r.domain_event for r in recordings)
            saved = {(e.originator_id, e.originator_version): e for e in events}
            return [self._result(mark, saved) for mark in marks]
        raise ConcurrencyError(f"{len(commands)} commands kept conflicting for {MAX_ATTEMPTS} attempts")

    @cached_property
    def _written(self) -> AccountCache:
        return AccountCache(ACCOUNT_CACHE_SIZE)

    def record(self, account_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
        # One query, straight to the recorder: records are never snapshotted.
        stored = self.recorder.select_events(IdempotencyRecord.create_id(account_id, key), limit=1)
        return self._record_of(stored[0]) if stored else None

    def _record_of(self, stored: StoredEvent) -> IdempotencyRecord:
        created = self.mapper.to_domain_event(stored)
        assert isinstance(created, CanMutateAggregate), "a record's created event"
        record = created.mutate(None)
        assert isinstance(record, IdempotencyRecord)
        return record

    def _result(
        self, mark: tuple[CreditAccount, int, bool] | LedgerError, saved: dict[tuple[uuid.UUID, int], AnyEvent]
    ) -> Result:
        if isinstance(mark, LedgerError):
            return mark
        account, version, replayed = mark
        event = saved.get((account.id, version)) or self._event_at(account.id, version)
        return Outcome(account, event, replayed)

    def _event_at(self, account_id: uuid.UUID, version: int) -> AnyEvent:
        return next(iter(self.repository.event_store.get(account_id, gt=version - 1, lte=version)))


class AccountCache:
    """The accounts the writer last saved, so a batch need not load them again: only the events other
    ledger processes appended since are read (with the batch's idempotency records, in one query).
    Used by the writer thread alone; a batch that fails forgets its accounts."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._accounts: OrderedDict[str, CreditAccount] = OrderedDict()

    def get(self, user_id: str) -> CreditAccount | None:
        account = self._accounts.get(user_id)
        if account is not None:
            self._accounts.move_to_end(user_id)
        return account

    def keep(self, accounts: Iterable[CreditAccount]) -> None:
        for account in accounts:
            self._accounts[account.user_id] = account
            self._accounts.move_to_end(account.user_id)
        while len(self._accounts) > self._size:
            self._accounts.popitem(last=False)

    def forget(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            self._accounts.pop(user_id, None)


class _Batch:
    """The accounts and idempotency records one batch reads and writes, each read once: cached
    accounts are caught up and every record the commands will ask about is fetched in ONE query."""

    def __init__(self, ledger: Ledger, commands: Sequence[Command]) -> None:
        self._ledger = ledger
        self.account_ids = {c.user_id for c in commands}
        cache = ledger._written
        cached = {user: account for user in self.account_ids if (account := cache.get(user)) is not None}
        keys = [(uuid.UUID(c.user_id), key) for c in commands for key in (c.key, *c.related_keys())]
        record_ids = {IdempotencyRecord.create_id(account, key): (account, key) for account, key in keys}
        self._records: dict[tuple[uuid.UUID, str], IdempotencyRecord | None] = dict.fromkeys(record_ids.values())
        newer = {account.id: account.version for account in cached.values()}
        by_id = {account.id: account for account in cached.values()}
        for stored in store.select_for_batch(ledger.recorder, record_ids, newer):
            origin = uuid.UUID(str(stored.originator_id))
            if origin in record_ids:
                self._records[record_ids[origin]] = ledger._record_of(stored)
            else:  # another ledger process wrote to this account since we saved it
                appended = ledger.mapper.to_domain_event(stored)
                assert isinstance(appended, CanMutateAggregate), "an account's event"
                appended.mutate(by_id[origin])
        self._accounts: dict[str, CreditAccount | None] = dict(cached)
        self._new: list[IdempotencyRecord] = []

    def accounts(self) -> list[CreditAccount]:
        return [a for a in self._accounts.values() if a is not None]

    def dirty(self) -> list[Any]:
        return [*(a for a in self.accounts() if a.pending_events), *self._new]

    def record(self, account_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
        if (account_id, key) not in self._records:
            self._records[(account_id, key)] = self._ledger.record(account_id, key)
        return self._records[(account_id, key)]

    def apply(self, command: Command) -> tuple[CreditAccount, int, bool] | LedgerError:
        if command.user_id not in self._accounts:
            self._accounts[command.user_id] = self._ledger.account(command.user_id)
        account = self._accounts[command.user_id]
        if account is None:
            if not command.opens_account:
                return AccountNotFoundError(f"No credit account for user {command.user_id}.")
            account = self._accounts[command.user_id] = CreditAccount(user_id=command.user_id)
        try:
            seen = self.record(account.id, command.key)
            if seen is not None:
                return account, seen.replay(command.fingerprint), True
            before = account.version
            COMMAND_HANDLERS[type(command)](account, command, lambda key: self.record(account.id, key) is not None)
        except LedgerError as error:
            return error
        if account.version == before:
            raise RuntimeError(f"command {command.key!r} triggered no event")
        # The command's own event comes first; a notification it caused (BalanceLow) may follow it.
        record = IdempotencyRecord(
            account_id=account.id, key=command.key, fingerprint=command.fingerprint, event_version=before + 1
        )
        self._records[(account.id, command.key)] = record
        self._new.append(record)
        return account, before + 1, False


def open_ledger(database_url: str) -> Ledger:
    """The application, its tables created under a lock: eventsourcing's CREATE TABLE IF NOT EXISTS
    is not safe when several ledger instances start at once (one fails on a duplicate type)."""
    with Connection.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('ledger:create-tables'))")
        try:
            return Ledger(env=store.eventsourcing_env(database_url))
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('ledger:create-tables'))")
