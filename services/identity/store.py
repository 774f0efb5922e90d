"""Identity's tables and queries."""

from __future__ import annotations

from datetime import datetime

from psycopg import AsyncConnection
from psycopg.rows import class_row

from services.identity.domain import Membership, MembershipInfo, Organization, OrgInfo, Profile, User
from shared.migrations import Migration

CLERK_DELIVERIES = "clerk-webhooks"  # the inbox's name (shared/inbox.py) for Svix deliveries

V1 = (  # migration 1: the tables as the service made them at every start before migrations
    """CREATE TABLE IF NOT EXISTS users (
        id UUID PRIMARY KEY,
        clerk_id TEXT NOT NULL UNIQUE,
        email TEXT NOT NULL,
        first_name TEXT,
        last_name TEXT,
        avatar TEXT,
        is_active BOOLEAN NOT NULL DEFAULT TRUE,
        role TEXT NOT NULL DEFAULT 'user',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS users_newest ON users (created_at DESC, id DESC)",
    # Clerk webhook deliveries already applied, by svix-id: a replay finds its row and does nothing.
    # Deliveries are claimed in the inbox now (shared/inbox.py): the ones recorded before move there.
    f"""DO $$ BEGIN
        IF to_regclass('clerk_webhooks') IS NOT NULL THEN
            INSERT INTO inbox (consumer, event_id) SELECT '{CLERK_DELIVERIES}', svix_id FROM clerk_webhooks
                ON CONFLICT DO NOTHING;
            DROP TABLE clerk_webhooks;
        END IF;
    END $$""",
)
MIGRATIONS = (
    Migration(1, "initial tables", V1),
    # When a user was forgotten (their profile blanked), and which of their messages are still on the
    # IDENTITY stream to be deleted (None: done).
    Migration(2, "erasure", (
        "ALTER TABLE users ADD COLUMN erased_at TIMESTAMPTZ",
        """CREATE TABLE stream_erasures (
            user_id UUID PRIMARY KEY,
            requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            seqs BIGINT[] NOT NULL,
            unknown BOOLEAN NOT NULL,
            done_at TIMESTAMPTZ
        )""",
        "CREATE INDEX stream_erasures_due ON stream_erasures (requested_at) WHERE done_at IS NULL",
    )),
    # Clerk organizations and who belongs to them: `changed_at` is the time (ms) of the newest word applied,
    # so an older one arriving late (a Svix retry, a token issued before a removal) changes nothing.
    Migration(3, "organizations", (
        """CREATE TABLE organizations (
            id TEXT PRIMARY KEY CHECK (id ~ '^org_[A-Za-z0-9]{1,100}$'),
            name TEXT NOT NULL,
            slug TEXT,
            changed_at BIGINT NOT NULL,
            deleted_at TIMESTAMPTZ,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )""",
        """CREATE TABLE memberships (
            org_id TEXT NOT NULL REFERENCES organizations (id),
            user_id UUID NOT NULL,
            clerk_user_id TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('org:admin', 'org:member')),
            membership_id TEXT,
            changed_at BIGINT NOT NULL,
            removed_at TIMESTAMPTZ,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (org_id, user_id)
        )""",
        "CREATE INDEX memberships_of_user ON memberships (user_id)",
    )),
)  # fmt: skip
# The events whose bodies hold a person's profile (email, names, avatar).
PROFILE_SUBJECTS = ("identity.user.registered", "identity.user.updated")

_COLUMNS = (
    "id::text AS id, clerk_id, email, first_name, last_name, avatar, is_active, role, created_at, updated_at, erased_at"
)


async def insert_if_absent(conn: AsyncConnection, user_id: str, profile: Profile) -> User | None:
    """Insert the user unless the clerk id exists; None when it did (another sign-in won)."""
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute(
            "INSERT INTO users (id, clerk_id, email, first_name, last_name, avatar, role)"
            # Any conflict, not only on clerk_id: the id is derived from the clerk id, so two first sign-ins
            # race on both unique indexes, and whichever PostgreSQL checks first must not be an error.
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
            f" RETURNING {_COLUMNS}",
            (
                user_id,
                profile.clerk_id,
                profile.email,
                profile.first_name,
                profile.last_name,
                profile.avatar,
                profile.role,
            ),
        )
        return await cur.fetchone()


async def by_clerk_id(conn: AsyncConnection, clerk_id: str) -> User | None:
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM users WHERE clerk_id = %s", (clerk_id,))
        return await cur.fetchone()


async def by_id(conn: AsyncConnection, user_id: str) -> User | None:
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM users WHERE id = %s", (user_id,))
        return await cur.fetchone()


async def update_profile(conn: AsyncConnection, profile: Profile) -> User | None:
    """Write the profile; None when the user is missing or nothing differs (so no event is due)."""
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute(
            "UPDATE users SET email = %s, first_name = %s, last_name = %s, avatar = %s, role = %s,"
            " updated_at = now() WHERE clerk_id = %s AND erased_at IS NULL"
            " AND (email, first_name, last_name, avatar, role) IS DISTINCT FROM (%s, %s, %s, %s, %s)"
            f" RETURNING {_COLUMNS}",
            (
                *(profile.email, profile.first_name, profile.last_name, profile.avatar, profile.role),
                profile.clerk_id,
                *(profile.email, profile.first_name, profile.last_name, profile.avatar, profile.role),
            ),
        )
        return await cur.fetchone()


async def set_active(conn: AsyncConnection, user_id: str, active: bool) -> User | None:
    """Flip the status; None when it already was `active` (or the user is missing), so two
    concurrent deactivations write one event between them."""
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute(
            "UPDATE users SET is_active = %s, updated_at = now() WHERE id = %s AND is_active <> %s"
            " AND (NOT %s OR erased_at IS NULL)"  # a forgotten user is never active again
            f" RETURNING {_COLUMNS}",
            (active, user_id, active, active),
        )
        return await cur.fetchone()


async def search(conn: AsyncConnection, text: str | None, after: tuple[datetime, str] | None, limit: int) -> list[User]:
    """Newest first; `text` matches email, first, last or full name, case-insensitively."""
    clauses: list[str] = []
    params: list[object] = []
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append(
            "(email ILIKE %s OR first_name ILIKE %s OR last_name ILIKE %s"
            " OR concat_ws(' ', first_name, last_name) ILIKE %s)"
        )
        params += [pattern] * 4
    if after is not None:
        clauses.append("(created_at, id) < (%s, %s)")
        params += [after[0], after[1]]
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM users {where} ORDER BY created_at DESC, id DESC LIMIT %s",
            (*params, limit),
        )
        return await cur.fetchall()


# -- erasure ----------------------------------------------------------------------------------------


async def erase(conn: AsyncConnection, user_id: str) -> User | None:
    """Blank the user's profile and deactivate them; None when there is no such user or it was done."""
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute(
            "UPDATE users SET email = '', first_name = NULL, last_name = NULL, avatar = NULL, is_active = FALSE,"
            f" erased_at = now(), updated_at = now() WHERE id = %s AND erased_at IS NULL RETURNING {_COLUMNS}",
            (user_id,),
        )
        return await cur.fetchone()


async def drop_profile_events(conn: AsyncConnection, user_id: str) -> tuple[list[int], bool]:
    """Delete the outbox rows whose events hold the user's profile: where the published ones sit on the
    stream, and whether some were published before their place was recorded (to be looked for)."""
    cursor = await conn.execute(
        "DELETE FROM outbox WHERE subject = ANY(%s) AND convert_from(payload, 'UTF8')::jsonb ->> 'user_id' = %s"
        " RETURNING stream_seq, sent_at IS NOT NULL",
        (list(PROFILE_SUBJECTS), user_id),
    )
    rows = await cursor.fetchall()
    return sorted(int(seq) for seq, _ in rows if seq is not None), any(seq is None and sent for seq, sent in rows)


async def record_stream_erasure(conn: AsyncConnection, user_id: str, seqs: list[int], unknown: bool) -> None:
    await conn.execute(
        "INSERT INTO stream_erasures (user_id, seqs, unknown) VALUES (%s, %s, %s)"
        " ON CONFLICT (user_id) DO UPDATE SET seqs = stream_erasures.seqs || EXCLUDED.seqs,"
        " unknown = stream_erasures.unknown OR EXCLUDED.unknown, done_at = NULL",
        (user_id, seqs, unknown),
    )


async def due_stream_erasures(conn: AsyncConnection) -> list[tuple[str, list[int], bool]]:
    cursor = await conn.execute(
        "SELECT user_id::text, seqs, unknown FROM stream_erasures WHERE done_at IS NULL ORDER BY requested_at LIMIT 100"
    )
    return [(u, list(s), bool(k)) for u, s, k in await cursor.fetchall()]


async def stream_erasure_done(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute("UPDATE stream_erasures SET done_at = now() WHERE user_id = %s", (user_id,))


# -- organizations ----------------------------------------------------------------------------------

_ORG_COLUMNS = "id, name, slug, changed_at, deleted_at, created_at"
_MEMBER_COLUMNS = "org_id, user_id::text AS user_id, clerk_user_id, role, membership_id, changed_at, removed_at"


async def organization(conn: AsyncConnection, org_id: str, *, lock: bool = False) -> Organization | None:
    async with conn.cursor(row_factory=class_row(Organization)) as cur:
        await cur.execute(
            f"SELECT {_ORG_COLUMNS} FROM organizations WHERE id = %s{' FOR UPDATE' if lock else ''}", (org_id,)
        )
        return await cur.fetchone()


async def insert_organization(conn: AsyncConnection, info: OrgInfo) -> Organization | None:
    """None when it exists (whoever inserted it first announces it)."""
    async with conn.cursor(row_factory=class_row(Organization)) as cur:
        await cur.execute(
            "INSERT INTO organizations (id, name, slug, changed_at) VALUES (%s, %s, %s, %s)"
            f" ON CONFLICT DO NOTHING RETURNING {_ORG_COLUMNS}",
            (info.org_id, info.name, info.slug, info.at),
        )
        return await cur.fetchone()


async def update_organization(conn: AsyncConnection, info: OrgInfo) -> Organization | None:
    """Write what Clerk says if it is newer and differs; None otherwise (no event due)."""
    async with conn.cursor(row_factory=class_row(Organization)) as cur:
        await cur.execute(
            "UPDATE organizations SET name = %s, slug = %s, changed_at = %s"
            " WHERE id = %s AND deleted_at IS NULL AND changed_at < %s AND (name, slug) IS DISTINCT FROM (%s, %s)"
            f" RETURNING {_ORG_COLUMNS}",
            (info.name, info.slug, info.at, info.org_id, info.at, info.name, info.slug),
        )
        return await cur.fetchone()


async def delete_organization(conn: AsyncConnection, org_id: str) -> Organization | None:
    """Mark it deleted (for good: Clerk never reuses an id); None when unknown or deleted before."""
    async with conn.cursor(row_factory=class_row(Organization)) as cur:
        await cur.execute(
            "UPDATE organizations SET deleted_at = now() WHERE id = %s AND deleted_at IS NULL"
            f" RETURNING {_ORG_COLUMNS}",
            (org_id,),
        )
        return await cur.fetchone()


async def membership(conn: AsyncConnection, org_id: str, user_id: str, *, lock: bool = False) -> Membership | None:
    async with conn.cursor(row_factory=class_row(Membership)) as cur:
        await cur.execute(
            f"SELECT {_MEMBER_COLUMNS} FROM memberships WHERE org_id = %s AND user_id = %s"
            f"{' FOR UPDATE' if lock else ''}",
            (org_id, user_id),
        )
        return await cur.fetchone()


async def organizations_of(conn: AsyncConnection, user_id: str) -> list[tuple[Organization, Membership]]:
    """The organizations the user belongs to now, by name."""
    cursor = await conn.execute(
        f"SELECT {', '.join('o.' + c for c in _ORG_COLUMNS.split(', '))},"
        " m.org_id, m.user_id::text, m.clerk_user_id, m.role, m.membership_id, m.changed_at, m.removed_at"
        " FROM memberships m JOIN organizations o ON o.id = m.org_id"
        " WHERE m.user_id = %s AND m.removed_at IS NULL AND o.deleted_at IS NULL ORDER BY o.name, o.id",
        (user_id,),
    )
    return [(Organization(*row[:6]), Membership(*row[6:])) for row in await cursor.fetchall()]


async def memberships_of(conn: AsyncConnection, user_id: str) -> list[Membership]:
    async with conn.cursor(row_factory=class_row(Membership)) as cur:
        await cur.execute(
            f"SELECT {_MEMBER_COLUMNS} FROM memberships WHERE user_id = %s AND removed_at IS NULL", (user_id,)
        )
        return await cur.fetchall()


async def members(conn: AsyncConnection, org_id: str) -> list[Membership]:
    async with conn.cursor(row_factory=class_row(Membership)) as cur:
        await cur.execute(
            f"SELECT {_MEMBER_COLUMNS} FROM memberships WHERE org_id = %s AND removed_at IS NULL ORDER BY created_at",
            (org_id,),
        )
        return await cur.fetchall()


async def write_membership(
    conn: AsyncConnection, user_id: str, info: MembershipInfo, *, removed: bool, at: int
) -> Membership:
    async with conn.cursor(row_factory=class_row(Membership)) as cur:
        await cur.execute(
            "INSERT INTO memberships (org_id, user_id, clerk_user_id, role, membership_id, changed_at, removed_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END)"
            " ON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role,"
            " membership_id = COALESCE(EXCLUDED.membership_id, memberships.membership_id),"
            " changed_at = EXCLUDED.changed_at,"
            " removed_at = CASE WHEN %s THEN COALESCE(memberships.removed_at, now()) END"
            f" RETURNING {_MEMBER_COLUMNS}",
            (info.org_id, user_id, info.clerk_user_id, info.role, info.membership_id, at, removed, removed),
        )
        row = await cur.fetchone()
        assert row is not None, "an upsert returns its row"
        return row
