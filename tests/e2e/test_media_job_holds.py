"""A media job's hold is settled by its job alone: neither the user whose credits it holds nor an admin can
capture or release it over HTTP (409, nothing changes), the job still captures it when it completes, and no
caller can name a job for a hold of its own."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer, stream_events
from tests.e2e.convergence import assert_converged, welcomed
from tests.e2e.test_media_images import image, upload


def account(system: System, token: str, user_id: str) -> dict[str, Any]:
    response = httpx.get(f"{system.url('ledger')}/api/accounts/{user_id}", headers=bearer(token), timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def settle(system: System, token: str, user_id: str, reservation: str, step: str) -> httpx.Response:
    body = {"release": {"reason": "I want my credit back"}, "capture": {"amount": 0}}[step]
    return httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/reservations/{reservation}/{step}",
        json=body,
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )


def test_a_media_jobs_hold_is_not_settled_by_hand_and_its_job_still_captures_it(system: System) -> None:
    token, user_id = welcomed(system)
    worker = system.services["media-worker"]
    worker.stop()  # the job waits on MEDIAWORK with its hold open until a worker is back
    try:
        assert upload(system, token, image()).status_code == 202
        wait_until(lambda: stream_events(system, "LEDGER", "ledger.credits.reserved", user_id) != [], timeout=20,
                   what="the job's hold")  # fmt: skip
        (held,) = stream_events(system, "LEDGER", "ledger.credits.reserved", user_id)
        reservation, job = held["data"]["reservation_id"], held["data"]["job_id"]
        before = account(system, token, user_id)
        assert (before["balance"], before["reserved"], before["available"]) == (10, 1, 9)

        for who in (token, admin_token(system)):
            for step in ("release", "capture"):
                refused = settle(system, who, user_id, reservation, step)
                assert refused.status_code == 409, refused.text
                assert refused.headers["content-type"] == "application/problem+json"
                assert f"belongs to media job {job} and is settled by it" in refused.json()["detail"]
        assert account(system, token, user_id) == before
    finally:
        worker.start().wait_ready()

    wait_until(lambda: account(system, token, user_id)["balance"] == 9, timeout=30, what="the job's capture")
    after = account(system, token, user_id)
    assert (after["reserved"], after["available"]) == (0, 9)
    assert stream_events(system, "LEDGER", "ledger.credits.released", user_id) == []
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("USAGE", -1), ("BONUS", 10)]


def test_a_caller_cannot_name_a_job_for_a_hold_of_its_own(system: System) -> None:
    token, user_id = welcomed(system)
    response = httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/reservations",
        json={"amount": 1, "job_id": str(uuid.uuid4())},
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "job_id"]
    assert account(system, token, user_id)["reserved"] == 0
