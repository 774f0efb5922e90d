"""The accounts a run debits: users signed in through identity, given plenty of credits up front by
an admin grant (ledger) and a seeded balance row (naive), so no debit is refused for want of credits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
from psycopg import AsyncConnection

from bench import naive
from bench.system import System

GRANT = 1_000_000  # the largest amount one ledger command takes
NAIVE_BALANCE = 10**12


@dataclass(frozen=True)
class User:
    clerk_id: str
    user_id: str
    token: str


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def dev_token(http: httpx.AsyncClient, system: System, clerk_id: str, role: str = "user") -> str:
    response = await http.post(
        f"{system.url('identity')}/dev/token",
        json={"clerk_id": clerk_id, "email": f"{clerk_id}@example.com", "role": role},
    )
    response.raise_for_status()
    return str(response.json()["token"])


async def sign_in(system: System, count: int, *, parallel: int = 8) -> list[User]:
    """`count` users, each signed in (/dev/token + /api/user/sync) and granted GRANT credits."""
    gate = asyncio.Semaphore(parallel)
    async with httpx.AsyncClient(timeout=60) as http:
        admin = await dev_token(http, system, "admin_bench", role="admin")

        async def one(i: int) -> User:
            async with gate:
                clerk_id = f"user_bench_{i:04d}"
                token = await dev_token(http, system, clerk_id)
                synced = await http.post(f"{system.url('identity')}/api/user/sync", headers=bearer(token))
                synced.raise_for_status()
                user_id = str(synced.json()["user"]["id"])
                granted = await http.post(
                    f"{system.url('ledger')}/api/accounts/{user_id}/grants",
                    headers={**bearer(admin), "Idempotency-Key": f"bench-grant-{user_id}"},
                    json={"type": "ADMIN_ADJUSTMENT", "amount": GRANT, "description": "benchmark credits"},
                )
                if granted.status_code != 201:
                    raise RuntimeError(f"grant for {user_id}: {granted.status_code} {granted.text}")
                return User(clerk_id, user_id, token)

        users = await asyncio.gather(*(one(i) for i in range(count)))
    async with await AsyncConnection.connect(system.database_url) as conn, conn.transaction():
        cursor = conn.cursor()
        await cursor.executemany(
            f"INSERT INTO {naive.SCHEMA}.credits (user_id, balance) VALUES (%s, %s)"
            " ON CONFLICT (user_id) DO UPDATE SET balance = EXCLUDED.balance",
            [(u.user_id, NAIVE_BALANCE) for u in users],
        )
    return list(users)
