"""Writing the read models: each row as its events tell it, in whatever order and however often they come
(the stream positions and ranks in the rows keep an older event from putting an older state back)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from shared import finance


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


# The profile and status position of a forgotten user: past any event's, so no profile or status event
# (late, redelivered or replayed) writes theirs back.
ERASED_SEQ = 2**62


async def erase_user(conn: AsyncConnection, user_id: str, *, at: Any) -> None:
    """Blank what the read models hold of the person (the profile); their credits and payments stay, under
    the pseudonymous id."""
    await conn.execute(
        "INSERT INTO users AS u (user_id, clerk_id, email, registered_at, is_active, profile_seq, status_seq)"
        " VALUES (%(u)s, '', '', %(at)s, FALSE, %(erased)s, %(erased)s) ON CONFLICT (user_id) DO UPDATE SET"
        " clerk_id = '', email = '', first_name = NULL, last_name = NULL, avatar = NULL, is_active = FALSE,"
        " profile_seq = %(erased)s, status_seq = %(erased)s",
        {"u": user_id, "at": at, "erased": ERASED_SEQ},
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
        " metadata, occurred_at, member_id) VALUES (%(seq)s, %(event_id)s, %(user_id)s, %(entry_type)s, %(amount)s,"
        " %(balance_after)s, %(description)s, %(metadata)s, %(occurred_at)s, %(member_id)s) ON CONFLICT DO NOTHING",
        {"member_id": None, **row, "metadata": Jsonb(row["metadata"])},
    )


async def save_organization(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """An organization as of stream position `seq`; a deleted one stays deleted."""
    await conn.execute(
        "INSERT INTO organizations AS o (org_id, account_id, name, slug, deleted, seq) VALUES (%(org_id)s,"
        " %(account_id)s, %(name)s, %(slug)s, %(deleted)s, %(seq)s) ON CONFLICT (org_id) DO UPDATE SET"
        " name = CASE WHEN EXCLUDED.seq > o.seq AND NOT EXCLUDED.deleted THEN EXCLUDED.name ELSE o.name END,"
        " slug = CASE WHEN EXCLUDED.seq > o.seq AND NOT EXCLUDED.deleted THEN EXCLUDED.slug ELSE o.slug END,"
        " deleted = o.deleted OR EXCLUDED.deleted, seq = GREATEST(o.seq, EXCLUDED.seq)",
        row,
    )


async def save_member(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """A membership as of stream position `seq` (a removal keeps the role last said)."""
    await conn.execute(
        "INSERT INTO org_members AS m (org_id, user_id, role, active, seq) VALUES (%(org_id)s, %(user_id)s,"
        " %(role)s, %(active)s, %(seq)s) ON CONFLICT (org_id, user_id) DO UPDATE SET"
        " role = COALESCE(EXCLUDED.role, m.role), active = EXCLUDED.active, seq = EXCLUDED.seq"
        " WHERE m.seq < EXCLUDED.seq",
        row,
    )


async def set_usage_cap(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO usage_caps AS c (account_id, monthly_credits, seq) VALUES (%(account_id)s, %(monthly_credits)s,"
        " %(seq)s) ON CONFLICT (account_id) DO UPDATE SET monthly_credits = EXCLUDED.monthly_credits,"
        " seq = EXCLUDED.seq WHERE c.seq < EXCLUDED.seq",
        row,
    )


async def set_member_limit(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO member_limits AS l (account_id, member_id, monthly_credits, seq) VALUES (%(account_id)s,"
        " %(member_id)s, %(monthly_credits)s, %(seq)s) ON CONFLICT (account_id, member_id) DO UPDATE SET"
        " monthly_credits = EXCLUDED.monthly_credits, seq = EXCLUDED.seq WHERE l.seq < EXCLUDED.seq",
        row,
    )


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


async def lot_sold(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """A paid lot: its value is owed from now (a redelivery finds its row and adds nothing)."""
    cur = await conn.execute(
        "INSERT INTO finance_lots (user_id, lot_id, credits, value_cents, currency) VALUES (%(user_id)s, %(lot_id)s,"
        " %(credits)s, %(value_cents)s, %(currency)s) ON CONFLICT (user_id, lot_id) DO NOTHING",
        row,
    )
    if cur.rowcount:
        await _finance_entry(conn, {**row, "kind": finance.Kind.SOLD, "cents": row["value_cents"], "job_id": None,
                                    "operation": None})  # fmt: skip


async def value_taken(conn: AsyncConnection, row: dict[str, Any], portions: dict[str, int]) -> None:
    """Credits that left paid lots (an entry of `row["entry_type"]`): the value each took, rounded as
    shared/finance.py says, against what had left the lot before. Lots given, not sold, have no row."""
    kind = finance.TAKEN_AS.get(row["entry_type"], finance.Kind.RECOGNISED)
    for lot_id, credits in portions.items():
        cur = await conn.execute(
            "SELECT credits, value_cents, currency, taken FROM finance_lots WHERE user_id = %s AND lot_id = %s"
            " FOR UPDATE",
            (row["user_id"], lot_id),
        )
        lot = await cur.fetchone()
        if lot is None or credits <= 0:
            continue
        lot_credits, value, currency, before = lot
        cents = finance.movement_cents(int(value), int(lot_credits), int(before), credits)
        await conn.execute(
            "UPDATE finance_lots SET taken = taken + %s WHERE user_id = %s AND lot_id = %s",
            (credits, row["user_id"], lot_id),
        )
        await _finance_entry(conn, {**row, "lot_id": lot_id, "kind": kind, "currency": currency, "credits": credits,
                                    "cents": cents})  # fmt: skip


async def _finance_entry(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO finance_entries (event_id, lot_id, seq, user_id, kind, month, currency, credits, cents, job_id,"
        " operation) VALUES (%(event_id)s, %(lot_id)s, %(seq)s, %(user_id)s, %(kind)s, %(month)s, %(currency)s,"
        " %(credits)s, %(cents)s, %(job_id)s, %(operation)s) ON CONFLICT (event_id, lot_id) DO NOTHING",
        {**row, "kind": str(row["kind"])},
    )


async def lot_expired(conn: AsyncConnection, user_id: str, lot_id: str) -> None:
    await conn.execute(
        "INSERT INTO lots (user_id, lot_id, expired) VALUES (%s, %s, TRUE)"
        " ON CONFLICT (user_id, lot_id) DO UPDATE SET expired = TRUE",
        (user_id, lot_id),
    )


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


async def add_activity(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO activity (event_id, user_id, kind, notification, message, data, occurred_at)"
        " VALUES (%(event_id)s, %(user_id)s, %(kind)s, %(notification)s, %(message)s, %(data)s, %(at)s)"
        " ON CONFLICT DO NOTHING",
        {**row, "data": Jsonb(row["data"])},
    )


async def add_to_feed(conn: AsyncConnection, user_id: str, kind: str, data: dict[str, Any], at: Any) -> None:
    await conn.execute(
        "WITH head AS (INSERT INTO feed_heads AS h (user_id, n) VALUES (%(u)s, 1)"
        " ON CONFLICT (user_id) DO UPDATE SET n = h.n + 1 RETURNING n)"
        " INSERT INTO feed (user_id, n, kind, data, occurred_at) SELECT %(u)s, n, %(kind)s, %(data)s, %(at)s FROM head",
        {"u": user_id, "kind": kind, "data": Jsonb(data), "at": at},
    )
