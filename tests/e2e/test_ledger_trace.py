"""One trace per user action: a debit's request trace reaches the LEDGER stream with its event."""

from __future__ import annotations

import asyncio
import secrets
import uuid

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import bearer
from tests.e2e.convergence import welcomed


def traceparents(system: System, user_id: str) -> list[str | None]:
    """The traceparent header of each message on LEDGER for `user_id`, in order."""

    async def read() -> list[str | None]:
        nc = await system.connect("ops")
        try:
            js = nc.jetstream()
            info = await js.stream_info("LEDGER", subjects_filter="ledger.>")
            found = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg("LEDGER", seq=seq)
                if msg.data and user_id.encode() in msg.data:
                    found.append((msg.headers or {}).get("traceparent"))
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


def test_a_debit_carries_the_callers_trace_onto_the_ledger_stream(system: System) -> None:
    token, user_id = welcomed(system)
    trace_id = secrets.token_hex(16)
    caller = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    response = httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/debits",
        json={"amount": 1},
        headers={**bearer(token), "Idempotency-Key": uuid.uuid4().hex, "traceparent": caller},
    )
    assert response.status_code == 201, response.text
    wait_until(lambda: len(traceparents(system, user_id)) == 2, timeout=20, what="the debit on the stream")
    _, debit = traceparents(system, user_id)
    assert debit is not None and debit.split("-")[1] == trace_id
