"""A monthly spending cap: a job that would pass it is refused with a 402 naming `cap` and takes nothing; the
next month (the ledger's calendar moved by a setting, not by waiting) it is accepted again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.testing.waiting import wait_until
from tests.conftest import System, system_of_its_own
from tests.e2e.auth_support import bearer
from tests.e2e.convergence import ledger_view, welcomed
from tests.e2e.test_media_images import command, completed

NEXT_MONTH = str(35 * 86_400)


@pytest.fixture(scope="module")
def capped(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system of its own: its ledger's clock is moved, which no other test may see."""
    with system_of_its_own(database_url, tmp_path_factory.mktemp("capped")) as (running, _):
        yield running


def set_cap(system: System, token: str, cap: int | None) -> httpx.Response:
    headers = {**bearer(token), "Idempotency-Key": str(uuid.uuid4())}
    return httpx.put(f"{system.url('ledger')}/api/user/limits", json={"monthly_usage_credits": cap}, headers=headers,
                     timeout=30)  # fmt: skip


def generate(system: System, token: str) -> httpx.Response:
    return command(system, token, "/api/images/generate", {"prompt": "capped", "width": 32, "height": 32})


def dashboard(system: System, token: str) -> dict[str, Any]:
    return dict(httpx.get(f"{system.url('projections')}/api/user/dashboard", headers=bearer(token), timeout=30).json())


def test_a_cap_of_five_takes_one_generation_refuses_the_next_and_opens_next_month(capped: System) -> None:
    system = capped
    token, user_id = welcomed(system)
    answer = set_cap(system, token, 5)
    assert answer.status_code == 200, answer.text
    assert {k: answer.json()[k] for k in ("account_id", "monthly_usage_credits", "used")} == {
        "account_id": user_id, "monthly_usage_credits": 5, "used": 0,
    }  # fmt: skip
    first = generate(system, token)
    assert first.status_code == 202 and completed(system, token, first.json()["id"])["status"] == "COMPLETED"
    refused = generate(system, token)
    assert refused.status_code == 402, refused.text
    assert {k: refused.json()[k] for k in ("account", "reason", "cap", "used", "amount")} == {
        "account": "user", "reason": "cap", "cap": 5, "used": 3, "amount": 3,
    }  # fmt: skip
    wait_until(lambda: ledger_view(system, token, user_id)["balance"] == 7, timeout=30, what="3 captured, 3 refused")
    wait_until(lambda: dashboard(system, token)["spending"]["used_this_month"] == 3, timeout=30, what="projected")
    assert dashboard(system, token)["spending"]["monthly_cap"] == 5

    system.services["ledger"].restart(CLOCK_OFFSET_SECONDS=NEXT_MONTH).wait_ready()
    assert set_cap(system, token, 5).json()["used"] == 0  # a new month
    again = generate(system, token)
    assert again.status_code == 202, again.text
    assert completed(system, token, again.json()["id"])["status"] == "COMPLETED"
    wait_until(lambda: ledger_view(system, token, user_id)["balance"] == 4, timeout=30, what="next month's capture")
