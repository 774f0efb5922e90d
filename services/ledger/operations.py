"""What a caller may ask of an account, by name: the request it sends and the command that request makes.

HTTP (api.py) and NATS request/reply (rpc.py) take the same request models (schemas.py) and build the
same commands here, so one request means one thing whichever door it came through. Events of other
services make their commands in handlers.py; the sweeper its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from services.ledger.commands import (
    Adjust,
    Capture,
    Command,
    Debit,
    Grant,
    Release,
    Reserve,
    client_key,
    reservation_id,
)
from services.ledger.schemas import AdjustmentIn, Body, CaptureIn, DebitIn, GrantIn, ReleaseIn, ReservationIn
from services.ledger.values import reservation_expiry
from shared import clock

B = TypeVar("B", bound=Body)


@dataclass(frozen=True)
class Asked:
    """Who asks of which account, under which key, in which request: what a door knows besides the body."""

    user_id: str
    key: str  # the caller's own, as sent (prefixed here, so it never collides with a derived one)
    request_id: str | None = None  # HTTP's X-Request-Id; none over NATS
    reservation_id: str | None = None  # the hold a capture or release names
    admin_id: str | None = None  # who adjusts
    member_id: str | None = None  # an organization's member spending its account (their limit applies)
    ttl_seconds: int = 900  # how long a hold lives that names no TTL (RESERVATION_TTL_SECONDS)
    now: datetime = field(default_factory=clock.now)

    def stamp(self) -> dict[str, Any]:
        """What every command asked by a caller carries."""
        return {
            "user_id": self.user_id,
            "key": client_key(self.key),
            "cause_id": self.request_id,
            "correlation_id": self.request_id,
        }

    @property
    def hold(self) -> str:
        assert self.reservation_id is not None, "the door names the hold"
        return self.reservation_id


@dataclass(frozen=True)
class Operation(Generic[B]):
    body: type[B]
    command: Callable[[B, Asked], Command]
    names_hold: bool = False  # a capture or release: which hold comes with the request


def _debit(body: DebitIn, asked: Asked) -> Debit:
    return Debit(
        **asked.stamp(), entry_type="USAGE", amount=body.amount, description=body.description, metadata=body.metadata,
        member_id=asked.member_id, asked_at=asked.now,
    )  # fmt: skip


def _grant(body: GrantIn, asked: Asked) -> Grant:
    return Grant(
        **asked.stamp(), entry_type=body.type, amount=body.amount, description=body.description,
        metadata=body.metadata, expires_at=body.expires_at,
    )  # fmt: skip


def _reserve(body: ReservationIn, asked: Asked) -> Reserve:
    stamp = asked.stamp()
    ttl = body.ttl_seconds or asked.ttl_seconds
    return Reserve(
        **stamp, reservation_id=reservation_id(asked.user_id, stamp["key"]), amount=body.amount, ttl_seconds=ttl,
        expires_at=reservation_expiry(asked.now, ttl), member_id=asked.member_id, asked_at=asked.now,
    )  # fmt: skip


def _capture(body: CaptureIn, asked: Asked) -> Capture:
    return Capture(
        **asked.stamp(), reservation_id=asked.hold, amount=body.amount, description=body.description,
        asked_at=asked.now,
    )  # fmt: skip


def _release(body: ReleaseIn, asked: Asked) -> Release:
    return Release(**asked.stamp(), reservation_id=asked.hold, reason=body.reason)


def _adjust(body: AdjustmentIn, asked: Asked) -> Adjust:
    assert asked.admin_id is not None, "only an admin adjusts"
    return Adjust(**asked.stamp(), amount=body.amount, reason=body.reason, admin_id=asked.admin_id)


OPERATIONS: dict[str, Operation[Any]] = {
    "debit": Operation(DebitIn, _debit),
    "grant": Operation(GrantIn, _grant),
    "reserve": Operation(ReservationIn, _reserve),
    "capture": Operation(CaptureIn, _capture, names_hold=True),
    "release": Operation(ReleaseIn, _release, names_hold=True),
    "adjust": Operation(AdjustmentIn, _adjust),
}


def command(name: str, body: Body, asked: Asked) -> Command:
    operation = OPERATIONS[name]
    if not isinstance(body, operation.body):
        raise TypeError(f"{name} takes a {operation.body.__name__}, not a {type(body).__name__}")
    return operation.command(body, asked)
