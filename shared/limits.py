"""Per-user limits, the same in every service: a token bucket per user and route class, and a count of
what a user holds open (live streams), both kept in the service's PostgreSQL schema so every copy of a
service shares them (no new server; the database's clock is the one clock they all read).

A route opts in with `Depends(rate_limited("<class>"))`: a user's token takes one token from the bucket
of that class, or the request is answered 429 with `Retry-After` and the IETF `RateLimit-Policy` and
`RateLimit` fields (draft-ietf-httpapi-ratelimit-headers) before it does anything. Admin and service
tokens are not counted: operators and services must never be throttled by a user's traffic.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import anyio
from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from psycopg_pool import AsyncConnectionPool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics
from shared.auth import CurrentPrincipal
from shared.problems import Problem
from shared.settings import Settings

# The buckets are UNLOGGED: a bucket is worth nothing after a crash (PostgreSQL empties the table on recovery and
# every user starts with a full one), so no write to them waits on the WAL.
LIMITS_DDL = (
    "DROP TABLE IF EXISTS rate_buckets",  # the first shape of the buckets (a logged table, one token a take)
    """CREATE UNLOGGED TABLE IF NOT EXISTS token_buckets (
        user_id TEXT NOT NULL,
        policy TEXT NOT NULL,
        tokens DOUBLE PRECISION NOT NULL,
        granted INTEGER NOT NULL,
        at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (user_id, policy)
    )""",
    """CREATE TABLE IF NOT EXISTS open_slots (
        id UUID PRIMARY KEY,
        user_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        seen_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
    )""",
    "CREATE INDEX IF NOT EXISTS open_slots_by_user ON open_slots (user_id, kind)",
)

# How long a copy may spend tokens it took from a bucket before it must give back what it did not spend.
LEASE_SECONDS = 1.0
# Users whose leases a copy remembers; the least recently seen are forgotten (their spare tokens with them).
LEASES_KEPT = 10_000


@dataclass(frozen=True)
class Policy:
    """`quota` requests per `window` seconds, refilled evenly; `burst` at most at once (the quota if unset)."""

    name: str
    quota: int
    window: int = 60
    burst: int | None = None

    @property
    def capacity(self) -> int:
        return self.burst or self.quota

    @property
    def rate(self) -> float:
        return self.quota / self.window

    @property
    def lease(self) -> int:
        """Tokens a copy takes from the bucket at once and spends without asking the database: a twentieth of
        the bucket, so a big one (ledger commands, 600) costs one write per 30 requests and a small one (media
        jobs, 10) is counted exactly, one write each."""
        return max(1, self.capacity // 20)


def policies(settings: Settings) -> dict[str, Policy]:
    """Every route class, from the settings (RATE_* in the environment)."""
    return {
        p.name: p
        for p in (
            Policy("media-jobs", settings.rate_media_jobs_per_minute, burst=settings.rate_media_jobs_burst),
            Policy("checkouts", settings.rate_checkouts_per_minute),
            Policy("promo-redemptions", settings.rate_promo_redemptions_per_minute),
            Policy("ledger-commands", settings.rate_ledger_commands_per_minute),
            Policy("stream-tickets", settings.rate_stream_tickets_per_minute),
        )
    }


@dataclass(frozen=True)
class Decision:
    policy: Policy
    allowed: bool
    tokens: float  # left for the user after this request

    @property
    def retry_after(self) -> int:
        """Whole seconds until one token is back (0 when one is there)."""
        return max(0, math.ceil((1 - self.tokens) / self.policy.rate))

    def headers(self) -> dict[str, str]:
        p = self.policy
        full_in = math.ceil((p.capacity - self.tokens) / p.rate)
        return {
            "RateLimit-Policy": f'"{p.name}";q={p.quota};w={p.window}',
            "RateLimit": f'"{p.name}";r={max(0, math.floor(self.tokens))};t={full_in}',
        }


# The bucket's level now: what it held and what a copy gives back, plus what the time since has refilled, up
# to its capacity.
_LEVEL = (
    "LEAST(%(capacity)s::float8, b.tokens + %(returned)s::float8"
    " + GREATEST(0, EXTRACT(EPOCH FROM (EXCLUDED.at - b.at))::float8) * %(rate)s::float8)"
)
# Whole tokens taken now: up to a lease, none when not one is there.
_GRANT = f"CASE WHEN {_LEVEL} >= 1 THEN LEAST(%(lease)s::float8, floor({_LEVEL}))::int ELSE 0 END"
# One statement: the row lock ON CONFLICT takes serialises two copies taking from one bucket.
_TAKE = f"""
    INSERT INTO token_buckets AS b (user_id, policy, tokens, granted, at)
    VALUES (%(user)s, %(policy)s, %(capacity)s::float8 - %(lease)s, %(lease)s,
            COALESCE(%(at)s::timestamptz, clock_timestamp()))
    ON CONFLICT (user_id, policy) DO UPDATE SET
        tokens = {_LEVEL} - {_GRANT},
        granted = {_GRANT},
        at = GREATEST(b.at, EXCLUDED.at)
    RETURNING tokens, granted
"""


@dataclass
class _Lease:
    spare: int  # tokens taken from the bucket and not spent yet
    level: float  # what the bucket held after they were taken
    taken_at: float  # time.monotonic()


class RateLimiter:
    """Takes tokens from the shared buckets a lease at a time (Policy.lease) and spends them here for up to
    LEASE_SECONDS; what is left then goes back with the next take. Every request let through spends a token
    taken from the shared bucket, so all copies together never pass its quota; a copy holds at most a lease
    of a user's tokens for a second, which another copy cannot spend meanwhile."""

    def __init__(self, pool: AsyncConnectionPool, limits: dict[str, Policy]) -> None:
        self._pool = pool
        self.policies = limits
        self._leases: OrderedDict[tuple[str, str], _Lease] = OrderedDict()
        self._asking: dict[tuple[str, str], asyncio.Event] = {}  # takes in flight

    async def take(self, policy_name: str, user_id: str, *, at: datetime | None = None) -> Decision:
        """One token from the user's bucket of `policy_name`, if there is one. `at` (tests) stands in
        for the database's clock."""
        policy = self.policies[policy_name]
        key = (policy.name, user_id)
        while True:
            if (spent := self._spend(policy, key)) is not None:
                return spent
            if (asking := self._asking.get(key)) is None:
                break
            # A burst of one user's requests waits for one take: each asking for itself would strand the
            # lease of the first in this copy while the others found the bucket emptied by it.
            await asking.wait()
        self._asking[key] = asked = asyncio.Event()
        try:
            return await self._take(policy, key, at)
        finally:
            del self._asking[key]
            asked.set()

    def _spend(self, policy: Policy, key: tuple[str, str]) -> Decision | None:
        """A token of this copy's lease, if it holds one still good."""
        held, now = self._leases.get(key), time.monotonic()
        if held is None or held.spare == 0 or now - held.taken_at >= LEASE_SECONDS:
            return None
        held.spare -= 1
        self._leases.move_to_end(key)
        refilled = min(policy.capacity, held.level + (now - held.taken_at) * policy.rate)
        return Decision(policy, allowed=True, tokens=min(policy.capacity, refilled + held.spare))

    async def _take(self, policy: Policy, key: tuple[str, str], at: datetime | None) -> Decision:
        """A lease from the shared bucket, giving back what is left of this copy's last one."""
        held, now = self._leases.pop(key, None), time.monotonic()
        params = {
            "user": key[1], "policy": policy.name, "capacity": policy.capacity, "rate": policy.rate,
            "lease": policy.lease, "returned": held.spare if held is not None else 0, "at": at,
        }  # fmt: skip
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_TAKE, params)
            row = await cursor.fetchone()
        assert row is not None, "an upsert returns its row"
        level, granted = float(row[0]), int(row[1])
        if granted == 0:
            return Decision(policy, allowed=False, tokens=level)
        if granted > 1:
            self._leases[key] = _Lease(granted - 1, level, now)
            if len(self._leases) > LEASES_KEPT:
                self._leases.popitem(last=False)
        return Decision(policy, allowed=True, tokens=level + granted - 1)


def rate_limited(policy_name: str) -> DependsParam:
    """A route dependency: the token's user takes one token of `policy_name`, or the request is a 429."""

    async def limit(request: Request, principal: CurrentPrincipal) -> None:
        if principal.role != "user":
            return
        limiter: RateLimiter = request.app.state.limiter
        decision = await limiter.take(policy_name, principal.user_id)
        if not decision.allowed:
            p = decision.policy
            metrics.RATE_LIMITED.add(1, {"route_class": p.name})
            raise Problem(
                429,
                f"Too many requests of this kind ({p.name}: {p.quota} per {p.window} s, {p.capacity} at once):"
                f" try again in {decision.retry_after} s.",
                headers={"Retry-After": str(decision.retry_after), **decision.headers()},
            )
        request.state.rate_limit = decision.headers()

    return Depends(limit)


class RateLimitHeaders:
    """Adds an accepted request's RateLimit fields to its answer, whatever kind of response the route
    returns (a model, a JSONResponse, a stream): FastAPI merges a dependency's headers into the first only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_fields(message: Message) -> None:
            fields = scope.get("state", {}).get("rate_limit")
            if message["type"] == "http.response.start" and fields:
                MutableHeaders(scope=message).update(fields)
            await send(message)

        await self.app(scope, receive, send_with_fields)


class SlotsFullError(Exception):
    """The user holds as many open as they may."""


class Slots:
    """At most `limit` things of a `kind` open per user (live streams), counted across every copy of the
    service. A holder beats (`beat`) while it lives; a slot not beaten for `stale_seconds` (its process
    died) no longer counts."""

    def __init__(self, pool: AsyncConnectionPool, kind: str, limit: int, *, stale_seconds: float = 30.0) -> None:
        self._pool = pool
        self.kind = kind
        self.limit = limit
        self._stale = stale_seconds

    async def open(self, user_id: str) -> Slot:
        """A slot for the user, to be closed by its holder; SlotsFullError if they hold `limit` already."""
        slot = Slot(self._pool, str(uuid.uuid4()))
        async with self._pool.connection() as conn, conn.transaction():
            # One user's openings take turns, so two at once cannot both see room for one.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (self.kind, user_id))
            await conn.execute(
                "DELETE FROM open_slots WHERE user_id = %s AND kind = %s"
                " AND seen_at <= clock_timestamp() - make_interval(secs => %s)",
                (user_id, self.kind, self._stale),
            )
            cursor = await conn.execute(
                "SELECT count(*) FROM open_slots WHERE user_id = %s AND kind = %s", (user_id, self.kind)
            )
            row = await cursor.fetchone()
            if row is not None and row[0] >= self.limit:
                raise SlotsFullError(f"{row[0]} {self.kind}s open, {self.limit} at most")
            await conn.execute(
                "INSERT INTO open_slots (id, user_id, kind) VALUES (%s, %s, %s)", (slot.id, user_id, self.kind)
            )
        return slot

    @asynccontextmanager
    async def held(self, user_id: str) -> AsyncIterator[Slot]:
        slot = await self.open(user_id)
        try:
            yield slot
        finally:
            await slot.close()


@dataclass(frozen=True)
class Slot:
    _pool: AsyncConnectionPool
    id: str

    async def beat(self) -> bool:
        """Still alive; False if the slot was taken back (silent too long): its holder must close."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute("UPDATE open_slots SET seen_at = clock_timestamp() WHERE id = %s", (self.id,))
            return cursor.rowcount == 1

    async def close(self) -> None:
        # Shielded: what closes a stream is mostly its client leaving, which cancels the stream's task, and in
        # a cancelled anyio scope every await would be cancelled again, leaving the slot taken until it ages out.
        with anyio.CancelScope(shield=True):
            async with self._pool.connection() as conn:
                await conn.execute("DELETE FROM open_slots WHERE id = %s", (self.id,))
