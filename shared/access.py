"""Deactivated users, as every service knows them.

Each service keeps a small table of users whose account status changed, fed by
identity.user.deactivated / .reactivated through a durable consumer of its own, and the auth
dependency asks it on every user request through a cache of a couple of seconds. So a deactivated
user's token is refused everywhere within a few seconds, without a call to identity per request,
and with every copy of a service agreeing (they share the table, not the consumer's deliveries).
The same consumer takes identity.user.erased: the user stays deactivated and the service's erasers
(`Runtime.erasers`: media's drops their files) forget what the service holds of them.

Organizations the same way: a token says its user belongs to its active organization, in a role, as of when
Clerk issued it (a minute at most); the membership changes identity announced since (a removal, a new role,
the organization deleted) overrule it here, so a removed member is refused within seconds everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from shared.bus import Subscription
from shared.contracts import Envelope
from shared.contracts.identity import (
    MemberAdded,
    MemberRemoved,
    MemberRoleChanged,
    OrganizationDeleted,
    UserDeactivated,
    UserErased,
    UserReactivated,
)

ACCESS_DDL = (
    """CREATE TABLE IF NOT EXISTS user_access (
        user_id TEXT PRIMARY KEY,
        active BOOLEAN NOT NULL,
        stream_seq BIGINT NOT NULL,
        changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
)
# Who may act for an organization, as identity last said: one row per membership, and one with user_id '' for
# the organization itself (inactive once deleted). A role of NULL: nothing said since the token.
ORG_ACCESS_DDL = (
    """CREATE TABLE org_access (
        org_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        active BOOLEAN NOT NULL,
        role TEXT,
        stream_seq BIGINT NOT NULL,
        PRIMARY KEY (org_id, user_id)
    )""",
)
CACHE_SECONDS = 2.0
MEMBERSHIP_EVENTS = (MemberAdded, MemberRoleChanged, MemberRemoved, OrganizationDeleted)
# What a service forgets of a user identity erased (their id): run by the access list's consumer, so a
# failure is retried like any other message.
Eraser = Callable[[str], Awaitable[None]]
CACHE_LIMIT = 50_000


@dataclass(frozen=True)
class Standing:
    """A user's standing in an organization: refused (removed, or the organization deleted), and the role
    identity last announced (None: only the token's word)."""

    excluded: bool
    role: str | None


class AccessList:
    def __init__(
        self, pool: AsyncConnectionPool, *, cache_seconds: float = CACHE_SECONDS, erasers: Sequence[Eraser] = ()
    ) -> None:
        self._pool = pool
        self._erasers = tuple(erasers)
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[bool, float]] = {}
        self._orgs: dict[tuple[str, str], tuple[Standing, float]] = {}

    async def is_deactivated(self, user_id: str) -> bool:
        now = time.monotonic()
        cached = self._cache.get(user_id)
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        async with self._pool.connection() as conn:
            cursor = await conn.execute("SELECT active FROM user_access WHERE user_id = %s", (user_id,))
            row = await cursor.fetchone()
        deactivated = row is not None and not row[0]
        self._remember(user_id, deactivated, now)
        return deactivated

    async def standing(self, org_id: str, user_id: str) -> Standing:
        """Whether the user may still act for the organization, and their role there if identity said one."""
        now = time.monotonic()
        cached = self._orgs.get((org_id, user_id))
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT user_id, active, role FROM org_access WHERE org_id = %s AND user_id IN ('', %s)",
                (org_id, user_id),
            )
            rows = {user: (active, role) for user, active, role in await cursor.fetchall()}
        org_active = rows.get("", (True, None))[0]
        member_active, role = rows.get(user_id, (True, None))
        standing = Standing(excluded=not (org_active and member_active), role=role)
        if len(self._orgs) >= CACHE_LIMIT:
            self._orgs.clear()
        self._orgs[(org_id, user_id)] = (standing, now)
        return standing

    async def apply(self, envelope: Envelope, stream_seq: int) -> None:
        """Record the newest status (an erased user is deactivated for good) and run the service's erasers;
        the stream sequence guard makes redelivery and replay harmless."""
        body = envelope.body()
        if isinstance(body, MEMBERSHIP_EVENTS):
            await self._apply_membership(body, stream_seq)
            return
        if not isinstance(body, UserDeactivated | UserReactivated | UserErased):
            return
        active = isinstance(body, UserReactivated)
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO user_access (user_id, active, stream_seq) VALUES (%s, %s, %s)"
                " ON CONFLICT (user_id) DO UPDATE"
                " SET active = EXCLUDED.active, stream_seq = EXCLUDED.stream_seq, changed_at = now()"
                " WHERE user_access.stream_seq < EXCLUDED.stream_seq",
                (body.user_id, active, stream_seq),
            )
        # Other copies of this service see it when their cache entry expires.
        self._cache.pop(body.user_id, None)
        if isinstance(body, UserErased):
            for erase in self._erasers:
                await erase(body.user_id)

    async def _apply_membership(
        self, body: MemberAdded | MemberRoleChanged | MemberRemoved | OrganizationDeleted, stream_seq: int
    ) -> None:
        user = "" if isinstance(body, OrganizationDeleted) else body.user_id
        role = body.role if isinstance(body, MemberAdded | MemberRoleChanged) else None
        active = isinstance(body, MemberAdded | MemberRoleChanged)
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO org_access (org_id, user_id, active, role, stream_seq) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (org_id, user_id) DO UPDATE SET active = EXCLUDED.active,"
                " role = COALESCE(EXCLUDED.role, org_access.role), stream_seq = EXCLUDED.stream_seq"
                " WHERE org_access.stream_seq < EXCLUDED.stream_seq",
                (body.org_id, user, active, role, stream_seq),
            )
        if user:
            self._orgs.pop((body.org_id, user), None)
        else:
            self._orgs = {key: hit for key, hit in self._orgs.items() if key[0] != body.org_id}

    def subscription(self, service: str) -> Subscription:
        subjects = (UserDeactivated.type, UserReactivated.type, UserErased.type, *(e.type for e in MEMBERSHIP_EVENTS))
        return Subscription("IDENTITY", f"{service}-access", subjects, self.apply)

    def _remember(self, user_id: str, deactivated: bool, now: float) -> None:
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()  # crude, but bounded: a cold cache only costs one query per user
        self._cache[user_id] = (deactivated, now)
