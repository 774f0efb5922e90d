"""Client commands (HTTP and NATS request/reply share them): request → `Command` with its key and
fingerprint. The act closes over plain values only, so a batch can re-run it after a conflict."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from services.ledger.application import Command, Seen
from services.ledger.domain import CreditAccount, reservation_expiry
from shared.contracts import derive_id


def fingerprint(operation: str, **fields: Any) -> str:
    """Hash of a request's meaning: the same key sent with a different meaning is a conflict."""
    canonical = json.dumps([operation, fields], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def client_key(key: str) -> str:
    # Clients choose their keys freely; the prefix keeps them from ever colliding with the keys the
    # ledger derives from events (`payment:<id>`), which would make a real payment look like a retry.
    return f"client:{key}"


def _entry(
    operation: str,
    user_id: str,
    *,
    entry_type: str,
    amount: int,
    description: str,
    metadata: dict[str, Any],
    key: str,
    request_id: str | None,
) -> Command:
    """A grant or a debit: the same request shape, the account method of the same name."""
    key = client_key(key)
    fp = fingerprint(operation, user_id=user_id, type=entry_type, amount=amount, d=description, m=metadata)

    def act(account: CreditAccount, _seen: Seen) -> None:
        getattr(account, operation)(
            entry_type=entry_type,
            amount=amount,
            key=key,
            fingerprint=fp,
            description=description,
            metadata=metadata,
            cause_id=request_id,
            correlation_id=request_id,
        )

    # Only a grant opens an account: a debit on an account never opened is a 404, not an empty one.
    return Command(user_id, key, fp, act, create=operation == "grant")


def debit(user_id: str, *, entry_type: str = "USAGE", **request: Any) -> Command:
    return _entry("debit", user_id, entry_type=entry_type, **request)


def grant(user_id: str, *, entry_type: str, **request: Any) -> Command:
    return _entry("grant", user_id, entry_type=entry_type, **request)


def adjust(user_id: str, *, amount: int, reason: str, admin_id: str, key: str, request_id: str | None) -> Command:
    """An operator's correction: credits in or out, whole or refused, with who and why."""
    metadata = {"admin_id": admin_id, "reason": reason}
    build = grant if amount > 0 else debit
    return build(
        user_id,
        entry_type="ADMIN_ADJUSTMENT",
        amount=abs(amount),
        description=reason,
        metadata=metadata,
        key=key,
        request_id=request_id,
    )


def reservation_id(user_id: str, key: str) -> str:
    """Derived from the key, so a retried reservation names the same hold."""
    return str(derive_id("reservation", user_id, key))


def reserve(
    user_id: str,
    *,
    amount: int,
    job_id: str | None,
    ttl_seconds: int,
    now: datetime,
    key: str,
    request_id: str | None,
) -> Command:
    key = client_key(key)
    rid = reservation_id(user_id, key)
    # `now` is left out on purpose: a retry a second later is the same request.
    fp = fingerprint("reserve", user_id=user_id, amount=amount, job_id=job_id, ttl=ttl_seconds)
    expires_at = reservation_expiry(now, ttl_seconds)

    def act(account: CreditAccount, _seen: Seen) -> None:
        account.reserve(
            reservation_id=rid,
            amount=amount,
            job_id=job_id,
            expires_at=expires_at,
            key=key,
            fingerprint=fp,
            cause_id=request_id,
            correlation_id=request_id,
        )

    return Command(user_id, key, fp, act, create=False)


def capture(
    user_id: str, *, reservation_id: str, amount: int | None, description: str, key: str, request_id: str | None
) -> Command:
    key = client_key(key)
    fp = fingerprint("capture", user_id=user_id, rid=reservation_id, amount=amount, d=description)

    def act(account: CreditAccount, _seen: Seen) -> None:
        account.capture(
            reservation_id=reservation_id,
            amount=amount,
            description=description,
            key=key,
            fingerprint=fp,
            cause_id=request_id,
            correlation_id=request_id,
        )

    return Command(user_id, key, fp, act, create=False)


def release(user_id: str, *, reservation_id: str, reason: str, key: str, request_id: str | None) -> Command:
    key = client_key(key)
    fp = fingerprint("release", user_id=user_id, rid=reservation_id, reason=reason)

    def act(account: CreditAccount, _seen: Seen) -> None:
        account.release(
            reservation_id=reservation_id,
            reason=reason,
            key=key,
            fingerprint=fp,
            cause_id=request_id,
            correlation_id=request_id,
        )

    return Command(user_id, key, fp, act, create=False)
