"""Projections' read tables and queries."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

DDL = (
    """CREATE TABLE IF NOT EXISTS users (
        user_id UUID PRIMARY KEY,
        clerk_id TEXT NOT NULL,
        email TEXT NOT NULL,
        first_name TEXT,
        last_name TEXT,
        avatar TEXT,
        is_active BOOLEAN NOT NULL DEFAULT TRUE,
        registered_at TIMESTAMPTZ NOT NULL
    )""",
    # The stream positions of the newest profile and status applied: an older event, redelivered late or
    # overtaken, changes nothing.
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS profile_seq BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS status_seq BIGINT NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS balances (
        user_id UUID PRIMARY KEY,
        balance BIGINT NOT NULL CHECK (balance >= 0),
        reserved BIGINT NOT NULL DEFAULT 0,
        last_seq BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    # Each figure with the stream position it is from: events carry one or the other (a grant its balance, a
    # hold its reserved credit), so an event applied out of order never puts an older figure back.
    "ALTER TABLE balances ADD COLUMN IF NOT EXISTS balance_seq BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE balances ADD COLUMN IF NOT EXISTS reserved_seq BIGINT NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS credit_entries (
        seq BIGINT PRIMARY KEY,
        event_id UUID NOT NULL UNIQUE,
        user_id UUID NOT NULL,
        entry_type TEXT NOT NULL,
        amount BIGINT NOT NULL,
        balance_after BIGINT NOT NULL,
        description TEXT NOT NULL,
        metadata JSONB NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS credit_entries_by_user ON credit_entries (user_id, seq DESC)",
    # Payments' transactions as the PAYMENTS stream tells them; `rank` only rises (a stale event never
    # turns a COMPLETED purchase back into FAILED), as in payments' own domain.
    """CREATE TABLE IF NOT EXISTS transactions (
        id TEXT PRIMARY KEY,
        user_id UUID NOT NULL,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        rank INTEGER NOT NULL,
        amount_cents BIGINT NOT NULL,
        currency TEXT NOT NULL,
        credits BIGINT NOT NULL,
        description TEXT NOT NULL,
        stripe_payment_intent_id TEXT,
        metadata JSONB NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS transactions_by_user ON transactions (user_id, created_at DESC)",
    """CREATE TABLE IF NOT EXISTS subscriptions (
        id TEXT PRIMARY KEY,
        user_id UUID NOT NULL,
        plan_id TEXT,
        status TEXT NOT NULL,
        credits BIGINT,
        amount_cents BIGINT,
        current_period_end TIMESTAMPTZ,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS subscriptions_by_user ON subscriptions (user_id, updated_at DESC)",
    # Media's jobs from the MEDIA stream (and the ledger's refusals): what was made, by which operation.
    """CREATE TABLE IF NOT EXISTS media_jobs (
        job_id TEXT PRIMARY KEY,
        user_id UUID NOT NULL,
        operation TEXT NOT NULL,
        resource_type TEXT,
        resource_id TEXT,
        cost BIGINT,
        status TEXT NOT NULL,
        requested_at TIMESTAMPTZ,
        ended_at TIMESTAMPTZ
    )""",
    "CREATE INDEX IF NOT EXISTS media_jobs_by_user ON media_jobs (user_id, status, resource_type)",
    # What happened to a user, newest first: purchases, refunds, renewals, media outcomes, notifications.
    """CREATE TABLE IF NOT EXISTS activity (
        event_id UUID PRIMARY KEY,
        user_id UUID NOT NULL,
        kind TEXT NOT NULL,
        notification BOOLEAN NOT NULL,
        message TEXT NOT NULL,
        data JSONB NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS activity_by_user ON activity (user_id, occurred_at DESC, event_id)",
    "CREATE INDEX IF NOT EXISTS credit_entries_by_user_time ON credit_entries (user_id, occurred_at, seq)",
    # Each account's lots: what each grant added, what entries took from it (added up, so any order of
    # delivery gives the same), and whether its rest expired.
    """CREATE TABLE IF NOT EXISTS lots (
        user_id UUID NOT NULL,
        lot_id TEXT NOT NULL,
        amount BIGINT,
        taken BIGINT NOT NULL DEFAULT 0,
        expired BOOLEAN NOT NULL DEFAULT FALSE,
        expires_at TIMESTAMPTZ,
        description TEXT,
        granted_at TIMESTAMPTZ,
        PRIMARY KEY (user_id, lot_id)
    )""",
    # Each user's live feed (balance changes and notifications), numbered per user in commit order: the
    # head row's lock makes a second transaction for the same user wait for the first one's number.
    """CREATE TABLE IF NOT EXISTS feed (
        user_id UUID NOT NULL,
        n BIGINT NOT NULL,
        kind TEXT NOT NULL,
        data JSONB NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (user_id, n)
    )""",
    "CREATE TABLE IF NOT EXISTS feed_heads (user_id UUID PRIMARY KEY, n BIGINT NOT NULL)",
    # Single-use tickets for a browser's EventSource (it cannot send an Authorization header); only the
    # ticket's hash is kept.
    """CREATE TABLE IF NOT EXISTS stream_tickets (
        ticket_hash TEXT PRIMARY KEY,
        user_id UUID NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS positions (
        consumer TEXT PRIMARY KEY,
        stream TEXT NOT NULL,
        stream_seq BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
)


async def record_position(conn: AsyncConnection, consumer: str, stream: str, seq: int) -> None:
    await conn.execute(
        "INSERT INTO positions (consumer, stream, stream_seq) VALUES (%s, %s, %s)"
        " ON CONFLICT (consumer) DO UPDATE SET stream_seq = GREATEST(positions.stream_seq, EXCLUDED.stream_seq),"
        " updated_at = now()",
        (consumer, stream, seq),
    )


async def upsert_user(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """The profile as of stream position `seq` (registered_at: the earliest moment seen)."""
    await conn.execute(
        "INSERT INTO users AS u (user_id, clerk_id, email, first_name, last_name, avatar, registered_at, profile_seq)"
        " VALUES (%(user_id)s, %(clerk_id)s, %(email)s, %(first_name)s, %(last_name)s, %(avatar)s, %(at)s, %(seq)s)"
        " ON CONFLICT (user_id) DO UPDATE SET registered_at = LEAST(u.registered_at, EXCLUDED.registered_at),"
        + ", ".join(
            f"{c} = CASE WHEN EXCLUDED.profile_seq > u.profile_seq THEN EXCLUDED.{c} ELSE u.{c} END"
            for c in ("clerk_id", "email", "first_name", "last_name", "avatar")
        )
        + ", profile_seq = GREATEST(u.profile_seq, EXCLUDED.profile_seq)",
        row,
    )


async def set_user_active(conn: AsyncConnection, user_id: str, active: bool, *, seq: int, at: Any) -> None:
    """The status as of stream position `seq`; one that overtook the registration keeps a row waiting for it."""
    await conn.execute(
        "INSERT INTO users AS u (user_id, clerk_id, email, registered_at, is_active, status_seq)"
        " VALUES (%(u)s, '', '', %(at)s, %(active)s, %(seq)s) ON CONFLICT (user_id) DO UPDATE SET"
        " is_active = EXCLUDED.is_active, status_seq = EXCLUDED.status_seq WHERE u.status_seq < EXCLUDED.status_seq",
        {"u": user_id, "active": active, "seq": seq, "at": at},
    )


async def set_balance(
    conn: AsyncConnection,
    user_id: str,
    *,
    seq: int,
    at: Any,
    balance: int | None = None,
    reserved: int | None = None,
) -> tuple[int, int]:
    """Move the account's figures to the state after stream message `seq`, each never back to an older one;
    the (balance, reserved) the row holds after."""
    cursor = await conn.execute(
        "INSERT INTO balances AS b (user_id, balance, reserved, last_seq, updated_at, balance_seq, reserved_seq)"
        " VALUES (%(user_id)s, COALESCE(%(balance)s, 0), COALESCE(%(reserved)s, 0), %(seq)s, %(at)s,"
        " CASE WHEN %(balance)s::bigint IS NULL THEN 0 ELSE %(seq)s END,"
        " CASE WHEN %(reserved)s::bigint IS NULL THEN 0 ELSE %(seq)s END)"
        " ON CONFLICT (user_id) DO UPDATE SET"
        " balance = CASE WHEN EXCLUDED.balance_seq > b.balance_seq THEN EXCLUDED.balance ELSE b.balance END,"
        " balance_seq = GREATEST(b.balance_seq, EXCLUDED.balance_seq),"
        " reserved = CASE WHEN EXCLUDED.reserved_seq > b.reserved_seq THEN EXCLUDED.reserved ELSE b.reserved END,"
        " reserved_seq = GREATEST(b.reserved_seq, EXCLUDED.reserved_seq),"
        " updated_at = CASE WHEN EXCLUDED.last_seq > b.last_seq THEN EXCLUDED.updated_at ELSE b.updated_at END,"
        " last_seq = GREATEST(b.last_seq, EXCLUDED.last_seq) RETURNING balance, reserved",
        {"user_id": user_id, "balance": balance, "reserved": reserved, "seq": seq, "at": at},
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def add_entry(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO credit_entries (seq, event_id, user_id, entry_type, amount, balance_after, description,"
        " metadata, occurred_at) VALUES (%(seq)s, %(event_id)s, %(user_id)s, %(entry_type)s, %(amount)s,"
        " %(balance_after)s, %(description)s, %(metadata)s, %(occurred_at)s) ON CONFLICT DO NOTHING",
        {**row, "metadata": Jsonb(row["metadata"])},
    )


async def balance_of(conn: AsyncConnection, user_id: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT balance, reserved, updated_at FROM balances WHERE user_id = %s", (user_id,))
        return await cur.fetchone()


async def entries_of(
    conn: AsyncConnection, user_id: str, *, before: int | None, limit: int, entry_type: str | None = None,
    at: Any = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """A user's credit log, newest first, below stream position `before`; only of `entry_type`, and only up
    to the moment `at`, when given."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT seq, event_id::text AS id, entry_type AS type, amount, balance_after, description, metadata,"
            " occurred_at AS created_at FROM credit_entries WHERE user_id = %(u)s AND seq < %(before)s"
            " AND (%(type)s::text IS NULL OR entry_type = %(type)s)"
            " AND (%(at)s::timestamptz IS NULL OR occurred_at <= %(at)s) ORDER BY seq DESC LIMIT %(limit)s",
            {"u": user_id, "before": before if before is not None else 2**62, "type": entry_type, "at": at,
             "limit": limit},
        )  # fmt: skip
        return await cur.fetchall()


# -- payments ---------------------------------------------------------------------------------------

STATUS_RANK = {"PENDING": 0, "FAILED": 1, "CANCELLED": 2, "COMPLETED": 3, "REFUNDED": 4}


async def save_transaction(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """A transaction's state as its events tell it, in whatever order they come: the highest-ranked status
    stands, a refund keeps the purchase's own amount and credits (the refunded ones go in its metadata)."""
    await conn.execute(
        "INSERT INTO transactions AS t (id, user_id, type, status, rank, amount_cents, currency, credits, description,"
        " stripe_payment_intent_id, metadata, created_at, updated_at) VALUES (%(id)s, %(user_id)s, %(type)s,"
        " %(status)s, %(rank)s, %(amount_cents)s, %(currency)s, %(credits)s, %(description)s,"
        " %(stripe_payment_intent_id)s, %(metadata)s, %(at)s, %(at)s)"
        " ON CONFLICT (id) DO UPDATE SET"
        " status = CASE WHEN EXCLUDED.rank > t.rank THEN EXCLUDED.status ELSE t.status END,"
        " rank = GREATEST(t.rank, EXCLUDED.rank),"
        " updated_at = CASE WHEN EXCLUDED.rank > t.rank THEN EXCLUDED.updated_at ELSE t.updated_at END,"
        " created_at = LEAST(t.created_at, EXCLUDED.created_at),"
        " amount_cents = CASE WHEN EXCLUDED.status = 'REFUNDED' THEN t.amount_cents ELSE EXCLUDED.amount_cents END,"
        " credits = CASE WHEN EXCLUDED.status = 'REFUNDED' THEN t.credits ELSE EXCLUDED.credits END,"
        " description = CASE WHEN EXCLUDED.status = 'REFUNDED' THEN t.description ELSE EXCLUDED.description END,"
        " metadata = t.metadata || EXCLUDED.metadata",
        {**row, "rank": STATUS_RANK[row["status"]], "metadata": Jsonb(row["metadata"])},
    )


async def save_subscription(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """The subscription as its events tell it, in whatever order they come: the newest status, the latest
    period's end (a plan, its credits and price are the subscription's own)."""
    await conn.execute(
        "INSERT INTO subscriptions AS s (id, user_id, plan_id, status, credits, amount_cents, current_period_end,"
        " updated_at) VALUES (%(id)s, %(user_id)s, %(plan_id)s, %(status)s, %(credits)s, %(amount_cents)s,"
        " %(period_end)s, %(at)s) ON CONFLICT (id) DO UPDATE SET plan_id = COALESCE(s.plan_id, EXCLUDED.plan_id),"
        " status = CASE WHEN EXCLUDED.updated_at >= s.updated_at THEN EXCLUDED.status ELSE s.status END,"
        " credits = COALESCE(s.credits, EXCLUDED.credits),"
        " amount_cents = COALESCE(s.amount_cents, EXCLUDED.amount_cents),"
        " current_period_end = GREATEST(s.current_period_end, EXCLUDED.current_period_end),"
        " updated_at = GREATEST(s.updated_at, EXCLUDED.updated_at)",
        {"plan_id": None, "credits": None, "amount_cents": None, "period_end": None, **row},
    )


# -- media --------------------------------------------------------------------------------------------


async def job_requested(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """What a job is; its outcome, if it came first (another consumer, another stream), stays."""
    await conn.execute(
        "INSERT INTO media_jobs AS j (job_id, user_id, operation, resource_type, resource_id, cost, status,"
        " requested_at) VALUES (%(job_id)s, %(user_id)s, %(operation)s, %(resource_type)s, %(resource_id)s,"
        " %(cost)s, 'PROCESSING', %(at)s) ON CONFLICT (job_id) DO UPDATE SET operation = EXCLUDED.operation,"
        " resource_type = EXCLUDED.resource_type, resource_id = EXCLUDED.resource_id,"
        " cost = COALESCE(j.cost, EXCLUDED.cost), requested_at = EXCLUDED.requested_at",
        row,
    )


async def job_ended(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """A job's outcome (COMPLETED, FAILED, CANCELLED, or REJECTED by the ledger); the first one stands."""
    await conn.execute(
        "INSERT INTO media_jobs AS j (job_id, user_id, operation, resource_id, cost, status, ended_at)"
        " VALUES (%(job_id)s, %(user_id)s, %(operation)s, %(resource_id)s, %(cost)s, %(status)s, %(at)s)"
        " ON CONFLICT (job_id) DO UPDATE SET status = EXCLUDED.status, ended_at = EXCLUDED.ended_at,"
        " cost = COALESCE(EXCLUDED.cost, j.cost), resource_id = COALESCE(j.resource_id, EXCLUDED.resource_id)"
        " WHERE j.status = 'PROCESSING'",
        {"resource_id": None, "cost": None, **row},
    )


# -- activity -----------------------------------------------------------------------------------------


async def add_activity(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO activity (event_id, user_id, kind, notification, message, data, occurred_at)"
        " VALUES (%(event_id)s, %(user_id)s, %(kind)s, %(notification)s, %(message)s, %(data)s, %(at)s)"
        " ON CONFLICT DO NOTHING",
        {**row, "data": Jsonb(row["data"])},
    )


# -- queries ------------------------------------------------------------------------------------------


async def _all(conn: AsyncConnection, sql: str, params: Any) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


async def _one(conn: AsyncConnection, sql: str, params: Any) -> dict[str, Any] | None:
    rows = await _all(conn, sql, params)
    return rows[0] if rows else None


async def user_of(conn: AsyncConnection, user_id: str) -> dict[str, Any] | None:
    return await _one(
        conn,
        "SELECT user_id::text AS id, clerk_id, email, first_name, last_name, avatar, is_active, registered_at"
        " FROM users WHERE user_id = %s AND profile_seq > 0",
        (user_id,),
    )


async def transactions_of(conn: AsyncConnection, user_id: str, limit: int) -> list[dict[str, Any]]:
    return await _all(
        conn,
        "SELECT id, type, status, amount_cents AS amount, currency, credits, description, stripe_payment_intent_id,"
        " metadata, created_at, updated_at FROM transactions WHERE user_id = %s ORDER BY created_at DESC, id LIMIT %s",
        (user_id, limit),
    )


async def subscription_of(conn: AsyncConnection, user_id: str) -> dict[str, Any] | None:
    return await _one(
        conn,
        "SELECT id, plan_id, status, credits, amount_cents, current_period_end, updated_at FROM subscriptions"
        " WHERE user_id = %s ORDER BY (status = 'CANCELLED'), updated_at DESC LIMIT 1",
        (user_id,),
    )


async def counts_of(conn: AsyncConnection, user_id: str) -> dict[str, int]:
    row = await _one(
        conn,
        "SELECT (SELECT count(*) FROM media_jobs WHERE user_id = %(u)s AND status = 'COMPLETED'"
        "        AND resource_type = 'image') AS images,"
        " (SELECT count(*) FROM media_jobs WHERE user_id = %(u)s AND status = 'COMPLETED'"
        "        AND resource_type = 'video') AS videos,"
        " (SELECT count(*) FROM transactions WHERE user_id = %(u)s) AS transactions",
        {"u": user_id},
    )
    assert row is not None
    return {key: int(value) for key, value in row.items()}


async def totals_of(conn: AsyncConnection, user_id: str) -> dict[str, int]:
    """Credits bought (purchases and renewals) and spent (usage less nothing: a refund is a claw-back), and
    money paid less money refunded."""
    row = await _one(
        conn,
        "SELECT COALESCE(SUM(amount) FILTER (WHERE entry_type = 'PURCHASE'), 0) AS credits_bought,"
        " COALESCE(-SUM(amount) FILTER (WHERE entry_type = 'USAGE'), 0) AS credits_spent"
        " FROM credit_entries WHERE user_id = %(u)s",
        {"u": user_id},
    )
    money = await _one(
        conn,
        "SELECT COALESCE(SUM(amount_cents) FILTER (WHERE status IN ('COMPLETED', 'REFUNDED')), 0)"
        " - COALESCE(SUM((metadata->>'refunded_cents')::bigint) FILTER (WHERE status = 'REFUNDED'), 0) AS paid"
        " FROM transactions WHERE user_id = %(u)s",
        {"u": user_id},
    )
    assert row is not None and money is not None
    return {"credits_bought": int(row["credits_bought"]), "credits_spent": int(row["credits_spent"]),
            "money_spent_cents": int(money["paid"])}  # fmt: skip


async def activity_of(conn: AsyncConnection, user_id: str, limit: int) -> list[dict[str, Any]]:
    return await _all(
        conn,
        "SELECT kind, notification, message, data, occurred_at FROM activity WHERE user_id = %s"
        " ORDER BY occurred_at DESC, event_id LIMIT %s",
        (user_id, limit),
    )


async def usage_by_day(conn: AsyncConnection, user_id: str, days: int) -> list[dict[str, Any]]:
    """Credits used per operation per UTC day over the last `days` days; spending that was not a media job
    (a direct debit) is `other`."""
    return await _all(
        conn,
        "SELECT (e.occurred_at AT TIME ZONE 'UTC')::date AS day, COALESCE(j.operation, 'other') AS operation,"
        " -SUM(e.amount)::bigint AS credits, count(*) AS count FROM credit_entries e"
        " LEFT JOIN media_jobs j ON j.job_id = e.metadata->>'job_id'"
        " WHERE e.user_id = %s AND e.entry_type = 'USAGE' AND e.occurred_at >= now() - make_interval(days => %s)"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        (user_id, days),
    )


async def expiring_of(conn: AsyncConnection, user_id: str) -> list[dict[str, Any]]:
    """The ledger's warnings of lots that expire soon, for lots that have not expired yet."""
    return await _all(
        conn,
        "SELECT DISTINCT ON (data->>'lot_id') data->>'lot_id' AS lot_id, (data->>'remaining')::bigint AS remaining,"
        " (data->>'expires_at')::timestamptz AS expires_at FROM activity a WHERE user_id = %(u)s"
        " AND kind = 'credits_expiring' AND (data->>'expires_at')::timestamptz > now() AND NOT EXISTS ("
        "   SELECT 1 FROM activity x WHERE x.user_id = %(u)s AND x.kind = 'credits_expired'"
        "   AND x.data->>'lot_id' = a.data->>'lot_id')"
        " ORDER BY data->>'lot_id', occurred_at DESC",
        {"u": user_id},
    )


async def balance_at(conn: AsyncConnection, user_id: str, at: Any) -> int:
    row = await _one(
        conn,
        "SELECT balance_after FROM credit_entries WHERE user_id = %s AND occurred_at <= %s ORDER BY seq DESC LIMIT 1",
        (user_id, at),
    )
    return int(row["balance_after"]) if row else 0


async def positions(conn: AsyncConnection) -> list[dict[str, Any]]:
    return await _all(conn, "SELECT consumer, stream, stream_seq, updated_at FROM positions ORDER BY consumer", ())


# -- the live feed ------------------------------------------------------------------------------------


async def add_to_feed(conn: AsyncConnection, user_id: str, kind: str, data: dict[str, Any], at: Any) -> None:
    await conn.execute(
        "WITH head AS (INSERT INTO feed_heads AS h (user_id, n) VALUES (%(u)s, 1)"
        " ON CONFLICT (user_id) DO UPDATE SET n = h.n + 1 RETURNING n)"
        " INSERT INTO feed (user_id, n, kind, data, occurred_at) SELECT %(u)s, n, %(kind)s, %(data)s, %(at)s FROM head",
        {"u": user_id, "kind": kind, "data": Jsonb(data), "at": at},
    )


async def feed_head(conn: AsyncConnection, user_id: str) -> int:
    row = await _one(conn, "SELECT n FROM feed_heads WHERE user_id = %s", (user_id,))
    return int(row["n"]) if row else 0


async def feed_after(conn: AsyncConnection, user_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    return await _all(
        conn,
        "SELECT n, kind, data FROM feed WHERE user_id = %s AND n > %s ORDER BY n LIMIT %s",
        (user_id, after, limit),
    )


async def issue_ticket(conn: AsyncConnection, ticket_hash: str, user_id: str, expires_at: Any) -> None:
    await conn.execute("DELETE FROM stream_tickets WHERE expires_at < now()")
    await conn.execute(
        "INSERT INTO stream_tickets (ticket_hash, user_id, expires_at) VALUES (%s, %s, %s)",
        (ticket_hash, user_id, expires_at),
    )


async def redeem_ticket(conn: AsyncConnection, ticket_hash: str) -> str | None:
    """The ticket's user, once: a ticket is gone when used, and worth nothing once expired."""
    row = await _one(
        conn,
        "DELETE FROM stream_tickets WHERE ticket_hash = %s"
        " RETURNING user_id::text AS user_id, expires_at > now() AS ok",
        (ticket_hash,),
    )
    return str(row["user_id"]) if row and row["ok"] else None


async def lock_apply(conn: AsyncConnection, *, exclusive: bool) -> None:
    """For the rest of the transaction: shared by every batch the consumers apply, exclusive for a replay's
    swap, which so finds no batch half-way and lets none start until it is done."""
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    await conn.execute(f"SELECT {function}(hashtext(current_schema() || ':apply'))")


# -- lots ---------------------------------------------------------------------------------------------


async def lot_granted(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO lots (user_id, lot_id, amount, expires_at, description, granted_at) VALUES (%(user_id)s,"
        " %(lot_id)s, %(amount)s, %(expires_at)s, %(description)s, %(at)s) ON CONFLICT (user_id, lot_id) DO UPDATE"
        " SET amount = EXCLUDED.amount, expires_at = EXCLUDED.expires_at, description = EXCLUDED.description,"
        " granted_at = EXCLUDED.granted_at",
        row,
    )


async def lots_taken(conn: AsyncConnection, user_id: str, portions: dict[str, int]) -> None:
    for lot_id, taken in portions.items():
        await conn.execute(
            "INSERT INTO lots AS l (user_id, lot_id, taken) VALUES (%s, %s, %s)"
            " ON CONFLICT (user_id, lot_id) DO UPDATE SET taken = l.taken + EXCLUDED.taken",
            (user_id, lot_id, taken),
        )


async def lot_expired(conn: AsyncConnection, user_id: str, lot_id: str) -> None:
    await conn.execute(
        "INSERT INTO lots (user_id, lot_id, expired) VALUES (%s, %s, TRUE)"
        " ON CONFLICT (user_id, lot_id) DO UPDATE SET expired = TRUE",
        (user_id, lot_id),
    )


async def lots_of(conn: AsyncConnection, user_id: str) -> list[dict[str, Any]]:
    """The lots with credit left, in the order the ledger spends them: soonest expiry first, lasting ones last."""
    return await _all(
        conn,
        "SELECT lot_id, amount, amount - taken AS remaining, expires_at, description FROM lots"
        " WHERE user_id = %s AND amount IS NOT NULL AND NOT expired AND amount > taken"
        " ORDER BY expires_at IS NULL, expires_at, length(lot_id), lot_id",
        (user_id,),
    )
