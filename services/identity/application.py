"""Identity's use cases: typed commands, each run by its handler in COMMAND_HANDLERS, writing its state and
its event in one transaction; and the reads admins make."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, overload

import nats.js.errors
from nats.js import JetStreamContext
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.identity import store
from services.identity.clerk import ClerkEvent
from services.identity.domain import (
    Membership,
    MembershipInfo,
    Organization,
    OrganizationNotFoundError,
    OrgInfo,
    Profile,
    SelfDeactivationError,
    User,
    UserDeactivatedError,
    UserErasedError,
    UserNotFoundError,
    membership_change,
)
from shared import outbox, webhooks
from shared.auth import user_id_for
from shared.contracts import Envelope, EventData
from shared.outbox import OutboxRelay


@dataclass(frozen=True)
class SyncUser:
    """createOrGetUser: a sign-in, with what the token says of the user (and of the organization it is
    active in, whose member the token says they are)."""

    profile: Profile
    correlation_id: str | None = None
    org: OrgInfo | None = None
    membership: MembershipInfo | None = None


@dataclass(frozen=True)
class ApplyClerkEvent:
    """One verified Clerk webhook delivery (its svix-id and what it says)."""

    svix_id: str
    event: ClerkEvent


@dataclass(frozen=True)
class SetActive:
    """An admin's deactivation or reactivation of a user."""

    user_id: str
    active: bool
    reason: str | None = None
    actor_user_id: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True)
class Erase:
    """Forget a user (Clerk's user.deleted, an admin, `creditstream erase`): repeating it changes nothing."""

    user_id: str
    correlation_id: str | None = None
    by: str | None = None  # the admin or service that asked; None: Clerk's user.deleted


@dataclass(frozen=True)
class SyncResult:
    user: User
    created: bool


@dataclass(frozen=True)
class StatusChange:
    user: User
    changed: bool


class Identity:
    def __init__(self, pool: AsyncConnectionPool, relay: OutboxRelay) -> None:
        self._pool = pool
        self._relay = relay
        self.erasures_due = asyncio.Event()  # set when a user was forgotten: their messages are to be deleted

    @overload
    async def execute(self, command: SyncUser) -> SyncResult: ...
    @overload
    async def execute(self, command: ApplyClerkEvent) -> bool: ...
    @overload
    async def execute(self, command: SetActive) -> StatusChange: ...
    @overload
    async def execute(self, command: Erase) -> User: ...

    async def execute(
        self, command: SyncUser | ApplyClerkEvent | SetActive | Erase
    ) -> SyncResult | bool | StatusChange | User:
        handler: Callable[[Identity, Any], Awaitable[SyncResult | bool | StatusChange | User]] = COMMAND_HANDLERS[
            type(command)
        ]
        return await handler(self, command)

    async def sync_user(self, command: SyncUser) -> SyncResult:
        """createOrGetUser: the first sign-in stores the user and queues identity.user.registered."""
        async with self._pool.connection() as conn, conn.transaction():
            result = await self._create_or_get(conn, command.profile, command.correlation_id)
            if command.org is not None and command.membership is not None and result.user.is_active:
                org = await self._org_word(conn, command.org, command.correlation_id)
                if org.deleted_at is None:
                    await self._membership_word(conn, command.membership, False, command.correlation_id)
        self._relay.wake()
        if not result.user.is_active:
            raise UserDeactivatedError(result.user.id)
        return result

    async def apply_clerk_event(self, command: ApplyClerkEvent) -> bool:
        """Apply one verified webhook delivery; False when this svix-id was applied before.

        The delivery record and the effect share a transaction: a crash leaves neither, and Svix's
        retry applies both.
        """
        svix_id, event = command.svix_id, command.event
        correlation_id = f"clerk:{svix_id}"

        async def effect(conn: AsyncConnection) -> None:
            if event.type == "user.created" and event.profile:
                await self._create_or_get(conn, event.profile, correlation_id)
            elif event.type == "user.updated" and event.profile:
                await self._update_or_create(conn, event.profile, correlation_id)
            elif event.type == "user.deleted" and event.clerk_id:
                user = await store.by_clerk_id(conn, event.clerk_id)
                if user is not None:
                    await self._erase(conn, user, None, correlation_id)
            elif event.type == "organization.deleted" and event.org:
                await self._delete_org(conn, event.org, correlation_id)
            elif event.org and event.membership is None:
                await self._org_word(conn, event.org, correlation_id)
            elif event.org and event.membership:
                org = await self._org_word(conn, event.org, correlation_id)
                removed = event.type == "organizationMembership.deleted"
                if org.deleted_at is None or removed:
                    await self._membership_word(conn, event.membership, removed, correlation_id)

        if not await webhooks.apply_once(self._pool, store.CLERK_DELIVERIES, svix_id, effect):
            return False
        self._relay.wake()
        self.erasures_due.set()
        return True

    async def erase(self, command: Erase) -> User:
        """Blank the profile, deactivate, announce identity.user.erased, and drop from the outbox the
        events that held the profile; their messages on the stream go next (`StreamEraser`)."""
        async with self._pool.connection() as conn, conn.transaction():
            user = await store.by_id(conn, command.user_id)
            if user is None:
                raise UserNotFoundError(command.user_id)
            erased = await self._erase(conn, user, command.by, command.correlation_id)
        if erased is not None:
            self._relay.wake()
            self.erasures_due.set()
        return erased or user

    async def set_active(self, command: SetActive) -> StatusChange:
        """Deactivate or reactivate; a repeat changes nothing and writes no event."""
        user_id, active, reason, correlation_id = (
            command.user_id,
            command.active,
            command.reason,
            command.correlation_id,
        )
        if not active and command.actor_user_id == user_id:
            raise SelfDeactivationError(user_id)
        async with self._pool.connection() as conn, conn.transaction():
            changed = await self._set_active(conn, user_id, active, reason, command.actor_user_id, correlation_id)
            user = changed or await store.by_id(conn, user_id)
        if user is None:
            raise UserNotFoundError(user_id)
        if active and user.erased_at is not None:
            raise UserErasedError(user_id)
        if changed:
            self._relay.wake()
        return StatusChange(user, changed=changed is not None)

    async def organization(self, org_id: str, user_id: str) -> tuple[Organization, Membership | None]:
        """An organization that exists (not deleted), and the user's membership of it if they have one."""
        async with self._pool.connection() as conn:
            org = await store.organization(conn, org_id)
            member = await store.membership(conn, org_id, user_id)
        if org is None or org.deleted_at is not None:
            raise OrganizationNotFoundError(org_id)
        return org, member

    async def organizations_of(self, user_id: str) -> list[tuple[Organization, Membership]]:
        async with self._pool.connection() as conn:
            return await store.organizations_of(conn, user_id)

    async def members(self, org_id: str) -> list[Membership]:
        async with self._pool.connection() as conn:
            return await store.members(conn, org_id)

    async def user(self, user_id: str) -> User:
        async with self._pool.connection() as conn:
            user = await store.by_id(conn, user_id)
        if user is None:
            raise UserNotFoundError(user_id)
        return user

    async def search(self, text: str | None, after: tuple[datetime, str] | None, limit: int) -> list[User]:
        async with self._pool.connection() as conn:
            return await store.search(conn, text, after, limit)

    async def _create_or_get(self, conn: AsyncConnection, profile: Profile, correlation_id: str | None) -> SyncResult:
        # Concurrent first sign-ins race on the unique clerk id: one insert wins, only it writes the event.
        user = await store.insert_if_absent(conn, user_id_for(profile.clerk_id), profile)
        if user is not None:
            await _emit(conn, user, user.registered(), correlation_id)
            return SyncResult(user, created=True)
        existing = await store.by_clerk_id(conn, profile.clerk_id)
        assert existing is not None, "insert conflicted, so the row exists"
        return SyncResult(existing, created=False)

    async def _update_or_create(self, conn: AsyncConnection, profile: Profile, correlation_id: str | None) -> None:
        # An update whose user we never saw (its created event lost or still in flight) creates it.
        created = await self._create_or_get(conn, profile, correlation_id)
        if created.created:
            return
        user = await store.update_profile(conn, profile)
        if user is not None:
            await _emit(conn, user, user.updated(), correlation_id)

    async def _erase(
        self, conn: AsyncConnection, user: User, by: str | None, correlation_id: str | None
    ) -> User | None:
        # The relay's lock: a batch it is publishing now is recorded (with where it sits) before we look.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':' || 'outbox'))")
        erased = await store.erase(conn, user.id)
        if erased is None:
            return None  # forgotten before
        if user.is_active:
            await _emit(conn, erased, erased.deactivated("erased", by), correlation_id)
        for member in await store.memberships_of(conn, user.id):
            word = MembershipInfo(member.org_id, member.clerk_user_id, member.role, member.changed_at)
            await self._membership_word(conn, word, True, correlation_id)
        seqs, unknown = await store.drop_profile_events(conn, user.id)
        await store.record_stream_erasure(conn, user.id, seqs, unknown)
        await _emit(conn, erased, erased.erased(by), correlation_id)
        return erased

    async def _set_active(
        self,
        conn: AsyncConnection,
        user_id: str,
        active: bool,
        reason: str | None,
        by: str | None,
        correlation_id: str | None,
    ) -> User | None:
        user = await store.set_active(conn, user_id, active)
        if user is not None:
            word = user.reactivated(by) if active else user.deactivated(reason, by)
            await _emit(conn, user, word, correlation_id)
        return user

    # -- organizations ------------------------------------------------------------------------------

    async def _org_word(self, conn: AsyncConnection, info: OrgInfo, correlation_id: str | None) -> Organization:
        """Store what Clerk (or a token) says of an organization: the first word creates it, a newer one that
        differs updates it, an older one or a deleted organization's changes nothing."""
        created = await store.insert_organization(conn, info)
        if created is not None:
            await _announce(conn, created.created(), None, correlation_id)
            return created
        updated = await store.update_organization(conn, info)
        if updated is not None:
            await _announce(conn, updated.updated(), None, correlation_id)
            return updated
        existing = await store.organization(conn, info.org_id)
        assert existing is not None, "the insert conflicted, so the row exists"
        return existing

    async def _delete_org(self, conn: AsyncConnection, info: OrgInfo, correlation_id: str | None) -> None:
        # One never seen is recorded deleted too: a late organization.created or token must not revive it.
        await store.insert_organization(conn, info)
        deleted = await store.delete_organization(conn, info.org_id)
        if deleted is not None:
            await _announce(conn, deleted.deleted(), None, correlation_id)

    async def _membership_word(
        self, conn: AsyncConnection, info: MembershipInfo, remove: bool, correlation_id: str | None
    ) -> None:
        user_id = user_id_for(info.clerk_user_id)
        # Two words about one membership (a webhook and a sign-in) must not both find it absent and add it.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"membership:{info.org_id}:{user_id}",))
        current = await store.membership(conn, info.org_id, user_id)
        change = membership_change(current, info, remove=remove, now_ms=time.time_ns() // 1_000_000)
        if change is None:
            return
        word = dataclasses.replace(info, role=change.role)
        row = await store.write_membership(conn, user_id, word, removed=change.removed, at=change.at)
        match change.event:
            case "added":
                await _announce(conn, row.added(), user_id, correlation_id)
            case "role":
                await _announce(conn, row.role_changed(), user_id, correlation_id)
            case "removed":
                await _announce(conn, row.removed(), user_id, correlation_id)


async def _emit(conn: AsyncConnection, user: User, body: EventData, correlation_id: str | None) -> None:
    await _announce(conn, body, user.id, correlation_id)


async def _announce(conn: AsyncConnection, body: EventData, user_id: str | None, correlation_id: str | None) -> None:
    await outbox.add(conn, Envelope.wrap(body, user_id=user_id, correlation_id=correlation_id))


# Every command and the use case that runs it.
COMMAND_HANDLERS: dict[type[Any], Callable[[Identity, Any], Awaitable[SyncResult | bool | StatusChange | User]]] = {
    SyncUser: Identity.sync_user,
    ApplyClerkEvent: Identity.apply_clerk_event,
    SetActive: Identity.set_active,
    Erase: Identity.erase,
}


log = logging.getLogger(__name__)
ERASURE_POLL_SECONDS = 10.0


class StreamEraser:
    """Deletes forgotten users' profile messages from the IDENTITY stream (JetStream overwrites a deleted
    message's data), from where the relay recorded them, or by looking through the stream for those
    published before that was recorded. Runs until each erasure is done: NATS away, it tries again."""

    def __init__(self, pool: AsyncConnectionPool, js: JetStreamContext, due: asyncio.Event) -> None:
        self._pool, self._js, self._due = pool, js, due

    async def run(self) -> None:
        while True:
            await self.erase_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), ERASURE_POLL_SECONDS)
            self._due.clear()

    async def erase_due(self) -> int:
        async with self._pool.connection() as conn:
            due = await store.due_stream_erasures(conn)
        for user_id, seqs, unknown in due:
            found = await self._look_for(user_id) if unknown else []
            for seq in sorted({*seqs, *found}):
                with contextlib.suppress(nats.js.errors.NotFoundError):  # deleted before, or aged out
                    await self._js.delete_msg(STREAM, seq)
            async with self._pool.connection() as conn:
                await store.stream_erasure_done(conn, user_id)
            log.info("erased %d profile messages of user %s from %s", len(seqs) + len(found), user_id, STREAM)
        return len(due)

    async def _look_for(self, user_id: str) -> list[int]:
        """The sequences of the user's profile messages, read one by one (erasures of rows relayed before
        their place was recorded only)."""
        info = await self._js.stream_info(STREAM)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await self._js.get_msg(STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue
            if msg.subject in store.PROFILE_SUBJECTS and _user_of(msg.data) == user_id:
                found.append(seq)
        return found


STREAM = "IDENTITY"


def _user_of(data: bytes | None) -> str | None:
    try:
        return Envelope.from_bytes(data or b"").user_id
    except ValueError:
        return None
