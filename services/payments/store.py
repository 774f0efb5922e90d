"""Payments' tables (all of them: DDL is what main and the tests migrate with) and the queries of
transactions and of the Stripe event inbox; billing_store.py queries the rest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from services.payments.commands import TransactionQuery
from services.payments.domain import Kind, PromoCode, Redemption, Status, Transaction
from shared.idempotency import IDEMPOTENCY_DDL
from shared.inbox import first_delivery
from shared.migrations import Migration

Row = TypeVar("Row")

# The inbox's names (shared/inbox.py) for Stripe's deliveries and for the low-balance crossings acted on.
STRIPE_DELIVERIES = "stripe-webhooks"
CROSSINGS = "auto-recharge-crossings"

V1 = (  # migration 1: the tables as the service made them at every start before migrations
    """CREATE TABLE IF NOT EXISTS transactions (
        id UUID PRIMARY KEY,
        user_id UUID NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),
        currency TEXT NOT NULL,
        credits INTEGER NOT NULL CHECK (credits >= 0),
        description TEXT NOT NULL,
        package_id TEXT,
        stripe_payment_intent_id TEXT UNIQUE,
        metadata JSONB NOT NULL DEFAULT '{}',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS transactions_of_user ON transactions (user_id, created_at DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS transactions_newest ON transactions (created_at DESC, id DESC)",
    *IDEMPOTENCY_DDL,
    # Stripe events received (the webhook's inbox): claimed by id on arrival, processed by a worker
    # that reads the object from Stripe and applies it in the transaction that sets processed_at.
    """CREATE TABLE IF NOT EXISTS stripe_events (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        object_id TEXT,
        received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        processed_at TIMESTAMPTZ,
        outcome TEXT
    )""",
    # The inbox named only PaymentIntents before subscriptions: its column now names any object.
    """DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'stripe_events' AND column_name = 'payment_intent_id') THEN
            ALTER TABLE stripe_events RENAME COLUMN payment_intent_id TO object_id;
        END IF;
    END $$""",
    "CREATE INDEX IF NOT EXISTS stripe_events_due ON stripe_events (next_attempt_at) WHERE processed_at IS NULL",
    # A subscription's invoice is one SUBSCRIPTION transaction, whichever event or process reports it.
    "ALTER TABLE transactions ADD COLUMN IF NOT EXISTS stripe_invoice_id TEXT UNIQUE",
    # The Stripe customer of each user who saved a card: made once, then reused.
    """CREATE TABLE IF NOT EXISTS customers (
        user_id UUID PRIMARY KEY,
        stripe_customer_id TEXT NOT NULL UNIQUE,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS subscriptions (
        id UUID PRIMARY KEY,
        user_id UUID NOT NULL,
        plan_id TEXT NOT NULL,
        status TEXT NOT NULL,
        stripe_subscription_id TEXT UNIQUE,
        current_period_start TIMESTAMPTZ,
        current_period_end TIMESTAMPTZ,
        cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS subscriptions_of_user ON subscriptions (user_id, created_at DESC)",
    # One live subscription per user: a second subscribe is refused, however it races.
    "CREATE UNIQUE INDEX IF NOT EXISTS subscriptions_one_live ON subscriptions (user_id)"
    " WHERE status IN ('INCOMPLETE', 'ACTIVE', 'PAST_DUE')",
    """CREATE TABLE IF NOT EXISTS auto_recharge (
        user_id UUID PRIMARY KEY,
        enabled BOOLEAN NOT NULL,
        threshold INTEGER NOT NULL,
        package_id TEXT NOT NULL,
        monthly_cap_cents INTEGER NOT NULL,
        disabled_reason TEXT,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    # One row per crossing that was acted on (bought, or refused and why), keyed by the ledger event
    # that crossed: a redelivered or concurrently consumed crossing finds its row.
    """CREATE TABLE IF NOT EXISTS recharges (
        crossing_event_id UUID PRIMARY KEY,
        user_id UUID NOT NULL,
        transaction_id UUID,
        amount_cents INTEGER NOT NULL DEFAULT 0,
        outcome TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS recharges_of_user ON recharges (user_id, created_at DESC)",
    # Deliveries and crossings are claimed in the inbox (shared/inbox.py); the ones taken before it, once.
    f"""INSERT INTO inbox (consumer, event_id) SELECT '{STRIPE_DELIVERIES}', id FROM stripe_events
        WHERE NOT EXISTS (SELECT 1 FROM inbox WHERE consumer = '{STRIPE_DELIVERIES}') ON CONFLICT DO NOTHING""",
    f"""INSERT INTO inbox (consumer, event_id) SELECT '{CROSSINGS}', crossing_event_id::text FROM recharges
        WHERE NOT EXISTS (SELECT 1 FROM inbox WHERE consumer = '{CROSSINGS}') ON CONFLICT DO NOTHING""",
)
MIGRATIONS = (
    Migration(1, "initial tables", V1),
    # What a refund gave back, and took back, as columns the database holds to the payment (a refund never
    # exceeds what was paid, nor its claw-back the credits granted), backfilled from the refund each
    # transaction's metadata recorded; the metadata keeps the rest of Stripe's answer.
    Migration(2, "refund totals as columns, within the payment", (
        "ALTER TABLE transactions ADD COLUMN refunded_cents INTEGER NOT NULL DEFAULT 0,"
        " ADD COLUMN credits_clawed_back INTEGER NOT NULL DEFAULT 0",
        """UPDATE transactions SET refunded_cents = coalesce((metadata->'refund'->>'amount_cents')::int, 0),
            credits_clawed_back = coalesce((metadata->'refund'->>'credits')::int, 0)
            WHERE metadata ? 'refund'""",
        "ALTER TABLE transactions ADD CONSTRAINT transactions_refund_within_payment"
        " CHECK (refunded_cents BETWEEN 0 AND amount_cents AND credits_clawed_back BETWEEN 0 AND credits)",
    )),
    # Promo codes and who redeemed each: the database holds a code to its maximum (however many redeem at
    # once, the counter's row lock lines them up) and an account to one redemption of it.
    Migration(3, "promo codes", (
        """CREATE TABLE promo_codes (
            code TEXT PRIMARY KEY CHECK (code = upper(code)),
            credits INTEGER NOT NULL CHECK (credits > 0),
            max_redemptions INTEGER NOT NULL CHECK (max_redemptions > 0),
            redeemed INTEGER NOT NULL DEFAULT 0 CHECK (redeemed BETWEEN 0 AND max_redemptions),
            valid_until TIMESTAMPTZ,
            credits_expire_in_days INTEGER CHECK (credits_expire_in_days > 0),
            new_users_only BOOLEAN NOT NULL DEFAULT FALSE,
            disabled_at TIMESTAMPTZ,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            created_by TEXT NOT NULL
        )""",
        """CREATE TABLE promo_redemptions (
            id UUID PRIMARY KEY,
            code TEXT NOT NULL REFERENCES promo_codes (code),
            user_id UUID NOT NULL,
            credits INTEGER NOT NULL,
            expires_at TIMESTAMPTZ,
            redeemed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            UNIQUE (code, user_id)
        )""",
    )),
    # At most so many automatic purchases a month, beside the cents cap.
    Migration(4, "a monthly count cap on auto-recharge", (
        "ALTER TABLE auto_recharge ADD COLUMN monthly_max_recharges INTEGER NOT NULL DEFAULT 5"
        " CHECK (monthly_max_recharges >= 0)",
    )),
)  # fmt: skip

_COLUMNS = (
    "id::text AS id, user_id::text AS user_id, kind, status, amount_cents, currency, credits, description,"
    " package_id, stripe_payment_intent_id, metadata, created_at, updated_at, refunded_cents, credits_clawed_back"
)


def _transaction(row: dict[str, Any]) -> Transaction:
    return Transaction(**{**row, "kind": Kind(row["kind"]), "status": Status(row["status"])})


async def one(
    conn: AsyncConnection, query: str, params: tuple[Any, ...], into: Callable[[dict[str, Any]], Row]
) -> Row | None:
    """The row `query` finds, made `into` what the caller reads; None when there is none."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        row = await cur.fetchone()
    return into(row) if row else None


def locked(lock: bool) -> str:
    return " FOR UPDATE" if lock else ""


# -- transactions ---------------------------------------------------------------------------------


async def insert(conn: AsyncConnection, tx: Transaction, invoice_id: str | None = None) -> bool:
    """A new transaction (a subscription's names its invoice); False when it was recorded before."""
    cursor = await conn.execute(
        "INSERT INTO transactions (id, user_id, kind, status, amount_cents, currency, credits, description,"
        " package_id, stripe_payment_intent_id, metadata, created_at, updated_at, stripe_invoice_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (
            tx.id, tx.user_id, tx.kind, tx.status, tx.amount_cents, tx.currency, tx.credits, tx.description,
            tx.package_id, tx.stripe_payment_intent_id, Jsonb(tx.metadata), tx.created_at, tx.updated_at, invoice_id,
        ),
    )  # fmt: skip
    return cursor.rowcount == 1


async def get(conn: AsyncConnection, tx_id: str, *, lock: bool = False) -> Transaction | None:
    return await one(conn, f"SELECT {_COLUMNS} FROM transactions WHERE id = %s{locked(lock)}", (tx_id,), _transaction)


async def by_payment_intent(conn: AsyncConnection, intent: str, *, lock: bool = False) -> Transaction | None:
    query = f"SELECT {_COLUMNS} FROM transactions WHERE stripe_payment_intent_id = %s{locked(lock)}"
    return await one(conn, query, (intent,), _transaction)


async def save(conn: AsyncConnection, tx: Transaction) -> None:
    """Write what may change: status, the PaymentIntent link, metadata, the refund's totals."""
    await conn.execute(
        "UPDATE transactions SET status = %s, stripe_payment_intent_id = %s, metadata = %s, updated_at = %s,"
        " refunded_cents = %s, credits_clawed_back = %s WHERE id = %s",
        (tx.status, tx.stripe_payment_intent_id, Jsonb(tx.metadata), tx.updated_at, tx.refunded_cents,
         tx.credits_clawed_back, tx.id),
    )  # fmt: skip


async def page(
    conn: AsyncConnection, query: TransactionQuery, after: tuple[datetime, str] | None, limit: int
) -> list[Transaction]:
    """Newest first, from after `after`."""
    clauses: list[str] = []
    params: list[object] = []
    if query.user_id is not None:
        clauses.append("user_id = %s")
        params.append(query.user_id)
    if query.statuses:
        clauses.append("status = ANY(%s)")
        params.append([str(s) for s in query.statuses])
    if query.kinds:
        clauses.append("kind = ANY(%s)")
        params.append([str(k) for k in query.kinds])
    if after is not None:
        clauses.append("(created_at, id) < (%s, %s)")
        params += [after[0], after[1]]
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM transactions {where} ORDER BY created_at DESC, id DESC LIMIT %s",
            (*params, limit),
        )
        return [_transaction(row) for row in await cur.fetchall()]


async def open_since(conn: AsyncConnection, since: datetime) -> list[str]:
    """PaymentIntents of transactions created since `since` that Stripe may still move."""
    cursor = await conn.execute(
        "SELECT stripe_payment_intent_id FROM transactions WHERE created_at >= %s"
        " AND stripe_payment_intent_id IS NOT NULL AND status <> ALL(%s)",
        (since, [Status.REFUNDED, Status.CANCELLED]),
    )
    return [row[0] for row in await cursor.fetchall()]


async def totals_by_status(conn: AsyncConnection, user_id: str) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT status, count(*) AS count, coalesce(sum(amount_cents), 0) AS amount_cents,"
            " coalesce(sum(credits), 0) AS credits,"
            " coalesce(sum(refunded_cents), 0) AS refunded_cents,"
            " coalesce(sum(credits_clawed_back), 0) AS credits_clawed_back"
            " FROM transactions WHERE user_id = %s GROUP BY status",
            (user_id,),
        )
        return await cur.fetchall()


# -- the Stripe event inbox -----------------------------------------------------------------------


async def queue_event(conn: AsyncConnection, event_id: str, kind: str, object_id: str | None) -> None:
    """A Stripe event for the worker to apply (its delivery claimed in the inbox by the caller)."""
    await conn.execute(
        "INSERT INTO stripe_events (id, type, object_id) VALUES (%s, %s, %s)", (event_id, kind, object_id)
    )


async def receive_settled_event(
    conn: AsyncConnection, event_id: str, kind: str, object_id: str | None, outcome: str
) -> bool:
    """Record an event as received and already dealt with (reconciliation applies its object itself)."""
    if not await first_delivery(conn, STRIPE_DELIVERIES, event_id):
        return False
    await conn.execute(
        "INSERT INTO stripe_events (id, type, object_id, processed_at, outcome, attempts)"
        " VALUES (%s, %s, %s, now(), %s, 1)",
        (event_id, kind, object_id, outcome),
    )
    return True


async def claim_due_event(conn: AsyncConnection) -> tuple[str, str, str | None] | None:
    """One due, unprocessed event, locked for the caller's transaction (others skip it)."""
    cursor = await conn.execute(
        "SELECT id, type, object_id FROM stripe_events WHERE processed_at IS NULL AND next_attempt_at <= now()"
        " ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
    row = await cursor.fetchone()
    return (row[0], row[1], row[2]) if row else None


async def event_processed(conn: AsyncConnection, event_id: str, outcome: str) -> None:
    await conn.execute(
        "UPDATE stripe_events SET processed_at = now(), outcome = %s, attempts = attempts + 1 WHERE id = %s",
        (outcome, event_id),
    )


async def event_failed(conn: AsyncConnection, event_id: str, outcome: str) -> None:
    """Try again later, backing off up to ten minutes between attempts."""
    await conn.execute(
        "UPDATE stripe_events SET attempts = attempts + 1, outcome = %s,"
        " next_attempt_at = now() + least(interval '1 second' * power(2, attempts), interval '10 minutes')"
        " WHERE id = %s",
        (outcome, event_id),
    )


async def stuck_events(conn: AsyncConnection, attempts: int) -> tuple[int, str | None]:
    """Unprocessed events tried at least `attempts` times: how many, and what the oldest last ran into."""
    cursor = await conn.execute(
        "SELECT count(*) OVER (), id || ': ' || coalesce(outcome, '') FROM stripe_events"
        " WHERE processed_at IS NULL AND attempts >= %s ORDER BY received_at LIMIT 1",
        (attempts,),
    )
    row = await cursor.fetchone()
    return (int(row[0]), row[1]) if row else (0, None)


# -- promo codes ----------------------------------------------------------------------------------------------

_PROMO = (
    "code, credits, max_redemptions, redeemed, valid_until, credits_expire_in_days, new_users_only, disabled_at,"
    " created_at, created_by"
)
_REDEMPTION = "id::text AS id, code, user_id::text AS user_id, credits, expires_at, redeemed_at"


async def add_promo(conn: AsyncConnection, promo: PromoCode) -> bool:
    """False when the code exists."""
    cursor = await conn.execute(
        "INSERT INTO promo_codes (code, credits, max_redemptions, valid_until, credits_expire_in_days, new_users_only,"
        " created_by) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (promo.code, promo.credits, promo.max_redemptions, promo.valid_until, promo.credits_expire_in_days,
         promo.new_users_only, promo.created_by),
    )  # fmt: skip
    return cursor.rowcount == 1


async def promo(conn: AsyncConnection, code: str, *, lock: bool = False) -> PromoCode | None:
    rows = await _rows(
        conn, f"SELECT {_PROMO} FROM promo_codes WHERE code = %s{' FOR UPDATE' if lock else ''}", (code,)
    )
    return PromoCode(**rows[0]) if rows else None


async def promos(conn: AsyncConnection) -> list[PromoCode]:
    return [PromoCode(**r) for r in await _rows(conn, f"SELECT {_PROMO} FROM promo_codes ORDER BY created_at DESC", ())]


async def disable_promo(conn: AsyncConnection, code: str) -> PromoCode | None:
    rows = await _rows(
        conn, f"UPDATE promo_codes SET disabled_at = COALESCE(disabled_at, now()) WHERE code = %s RETURNING {_PROMO}",
        (code,),
    )  # fmt: skip
    return PromoCode(**rows[0]) if rows else None


async def redemption(conn: AsyncConnection, redemption_id: str) -> Redemption | None:
    rows = await _rows(conn, f"SELECT {_REDEMPTION} FROM promo_redemptions WHERE id = %s", (redemption_id,))
    return Redemption(**rows[0]) if rows else None


async def redemption_of(conn: AsyncConnection, code: str, user_id: str) -> Redemption | None:
    rows = await _rows(conn, f"SELECT {_REDEMPTION} FROM promo_redemptions WHERE code = %s AND user_id = %s",
                       (code, user_id))  # fmt: skip
    return Redemption(**rows[0]) if rows else None


async def redeem(conn: AsyncConnection, redemption: Redemption) -> bool:
    """Count the redemption against the code and record it, in the caller's transaction; False when the account
    redeemed the code before (the caller rolls back: the count went up)."""
    await conn.execute("UPDATE promo_codes SET redeemed = redeemed + 1 WHERE code = %s", (redemption.code,))
    cursor = await conn.execute(
        "INSERT INTO promo_redemptions (id, code, user_id, credits, expires_at, redeemed_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (code, user_id) DO NOTHING",
        (redemption.id, redemption.code, redemption.user_id, redemption.credits, redemption.expires_at,
         redemption.redeemed_at),
    )  # fmt: skip
    return cursor.rowcount == 1


async def has_bought(conn: AsyncConnection, user_id: str) -> bool:
    """Whether the account has paid for anything (a pack, a plan, a recharge): then it is no new user's."""
    cursor = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM transactions WHERE user_id = %s AND status IN ('COMPLETED', 'REFUNDED'))",
        (user_id,),
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


async def _rows(conn: AsyncConnection, sql: str, params: Any) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()
