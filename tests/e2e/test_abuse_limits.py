"""Per-user limits over real HTTP (shared/limits.py): a burst of media jobs, checkouts or stream tickets
is cut at its bucket with 429, Retry-After and the RateLimit fields, and nothing is done for a refused
request; a user holds at most three live streams; a deactivated user's open stream ends within 5 s."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from shared import db_roles
from shared.testing.servers import ServiceProcess, started
from shared.testing.waiting import free_port, wait_until
from tests.conftest import System
from tests.e2e.auth_support import admin_token, bearer
from tests.e2e.convergence import assert_converged, welcomed
from tests.e2e.stripe_support import checkout, stripe_api
from tests.e2e.test_live_credits import listening
from tests.e2e.test_media_images import command, completed, image, upload


def _generate(system: System, token: str, i: int) -> httpx.Response:
    body = {"prompt": f"limit {i}", "width": 32, "height": 32}
    headers = {**bearer(token), "Idempotency-Key": str(uuid.uuid4())}
    return httpx.post(f"{system.url('media')}/api/images/generate", json=body, headers=headers, timeout=60)


def _grant(system: System, user_id: str, amount: int) -> None:
    url = f"{system.url('ledger')}/api/accounts/{user_id}/grants"
    headers = {**bearer(admin_token(system)), "Idempotency-Key": str(uuid.uuid4())}
    answer = httpx.post(url, json={"amount": amount, "type": "BONUS"}, headers=headers, timeout=30)
    assert answer.status_code == 201, answer.text


def _assert_refused(answer: httpx.Response, policy: str) -> int:
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["RateLimit-Policy"].startswith(f'"{policy}";q=')
    assert answer.headers["RateLimit"].startswith(f'"{policy}";r=0;t=')
    assert "try again in" in answer.json()["detail"]
    return int(answer.headers["Retry-After"])


def test_forty_generations_at_once_are_cut_at_the_burst_and_accepted_again_after_retry_after(system: System) -> None:
    token, user_id = welcomed(system)
    _grant(system, user_id, 200)  # credit for every one of them: only the limit refuses
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda i: _generate(system, token, i), range(40)))
    accepted = [a for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code != 202]
    # 30 a minute, 10 at once: the burst, and a token every 2 s while the 40 arrive.
    assert 10 <= len(accepted) <= 12, sorted(a.status_code for a in answers)
    waits = {_assert_refused(a, "media-jobs") for a in refused}
    assert waits <= {1, 2}
    assert accepted[0].headers["RateLimit-Policy"] == '"media-jobs";q=30;w=60'

    # A refused request takes no token, so asking until one is back changes nothing; it must come within
    # what the server said to wait (and a little for the round trips).
    again: list[httpx.Response] = []

    def token_back() -> bool:
        again.append(_generate(system, token, 99))
        return again[-1].status_code == 202

    wait_until(token_back, timeout=max(waits) + 3, what="a token back after Retry-After")
    assert all(a.status_code == 429 for a in again[:-1])

    made = len(accepted) + 1
    images = httpx.get(f"{system.url('media')}/api/images?limit=100", headers=bearer(token), timeout=30).json()
    assert len(images["images"]) == made, "a refused request kept nothing"
    ledger = f"{system.url('ledger')}/api/accounts/{user_id}"
    wait_until(
        lambda: httpx.get(ledger, headers=bearer(token), timeout=30).json()["balance"] == 210 - 3 * made,
        timeout=60,
        what="one capture of 3 for each accepted generation and none for a refused one",
    )
    assert_converged(system, token, user_id)


def test_two_copies_of_media_share_one_bucket(system: System) -> None:
    roles = db_roles.service_urls(system.env["DATABASE_URL"], Path(system.env["DATA_DIR"]) / db_roles.FILE)
    env = system.env | system.nats_users.env("media") | {"DATABASE_URL": roles["media"]}
    with started(ServiceProcess("media-copy", free_port(), env, echo=None, app="services.media.main:create_app")) as (
        copy,
    ):
        token, user_id = welcomed(system)
        _grant(system, user_id, 200)
        urls = [system.url("media"), copy.url]

        def generate(i: int) -> httpx.Response:
            body = {"prompt": f"two copies {i}", "width": 32, "height": 32}
            headers = {**bearer(token), "Idempotency-Key": str(uuid.uuid4())}
            return httpx.post(f"{urls[i % 2]}/api/images/generate", json=body, headers=headers, timeout=60)

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(generate, range(24)))
    by_copy = [[a.status_code for a in answers[i::2]] for i in range(2)]
    accepted = sum(codes.count(202) for codes in by_copy)
    assert 10 <= accepted <= 12, by_copy  # the one burst of 10 (and a token every 2 s), not one per copy
    assert {c for codes in by_copy for c in codes} == {202, 429}, by_copy
    assert all(codes.count(429) >= 2 for codes in by_copy), "12 asked of each copy, ten at most let through in all"


def test_twenty_checkouts_in_a_burst_make_ten_payment_intents(system: System) -> None:
    token, _ = welcomed(system)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: checkout(system, token, "basic"), range(20)))
    accepted = [a for a in answers if a.status_code == 201]
    assert len(accepted) == 10, sorted(a.status_code for a in answers)
    for answer in answers:
        if answer.status_code != 201:
            assert _assert_refused(answer, "checkouts") >= 1
    mine = httpx.get(f"{system.url('payments')}/api/user/transactions?limit=100", headers=bearer(token), timeout=30)
    transactions = {t["id"] for t in mine.json()["transactions"]}
    assert transactions == {a.json()["transaction_id"] for a in accepted}, "a refused checkout recorded nothing"
    assert len(_intents_for(system, transactions)) == 10, "and made no PaymentIntent"


def _intents_for(system: System, transactions: set[str]) -> list[str]:
    intents, page = [], stripe_api(system, "payment_intents?limit=100", "GET")
    while True:
        intents += [i["id"] for i in page["data"] if i["metadata"].get("transaction_id") in transactions]
        if not page["has_more"]:
            return intents
        page = stripe_api(system, f"payment_intents?limit=100&starting_after={page['data'][-1]['id']}", "GET")


def test_ledger_commands_say_their_limit_and_admins_are_not_counted(system: System) -> None:
    token, user_id = welcomed(system)
    url = f"{system.url('ledger')}/api/accounts/{user_id}/debits"

    def debit(who: str) -> httpx.Response:
        headers = {**bearer(who), "Idempotency-Key": str(uuid.uuid4())}
        return httpx.post(url, json={"amount": 1}, headers=headers, timeout=30)

    first, second = debit(token), debit(token)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.headers["RateLimit-Policy"] == '"ledger-commands";q=600;w=60'
    assert first.headers["RateLimit"].startswith('"ledger-commands";r=599;')
    # 10 tokens a second come back: the second request finds 598 and whatever refilled since the first.
    remaining = int(second.headers["RateLimit"].split(";r=")[1].split(";")[0])
    assert 598 <= remaining <= 599
    as_admin = debit(admin_token(system))
    assert as_admin.status_code == 201 and "RateLimit" not in as_admin.headers


def test_stream_tickets_are_limited_and_a_fourth_stream_is_refused(system: System) -> None:
    token, _ = welcomed(system)
    ticket_url = f"{system.url('projections')}/api/user/credits/stream-ticket"
    tickets = [httpx.post(ticket_url, headers=bearer(token), timeout=30) for _ in range(11)]
    assert [t.status_code for t in tickets[:10]] == [200] * 10
    _assert_refused(tickets[10], "stream-tickets")

    stream_url = f"{system.url('projections')}/api/user/credits/stream"
    with ExitStack() as open_streams:
        streams = [open_streams.enter_context(listening(system, bearer(token))) for _ in range(3)]
        assert all(s.next()["event"] == "balance" for s in streams)
        fourth = httpx.get(stream_url, headers=bearer(token), timeout=30)
        assert fourth.status_code == 429 and "3 live streams open" in fourth.json()["detail"]
        assert int(fourth.headers["Retry-After"]) >= 1
    # Closed by their client, they free their slots.
    wait_until(lambda: _opens(system, token), timeout=15, what="a stream opening once the others closed")


def _opens(system: System, token: str) -> bool:
    url = f"{system.url('projections')}/api/user/credits/stream"
    with httpx.stream("GET", url, headers=bearer(token), timeout=httpx.Timeout(30, read=None)) as response:
        return response.status_code == 200


def test_a_deactivated_users_open_stream_ends_within_five_seconds(system: System) -> None:
    token, user_id = welcomed(system)
    ticket_url = f"{system.url('projections')}/api/user/credits/stream-ticket"
    unused = httpx.post(ticket_url, headers=bearer(token), timeout=30).json()["ticket"]
    with listening(system, bearer(token)) as stream:
        assert stream.next()["event"] == "balance"
        deactivate = f"{system.url('identity')}/api/admin/users/{user_id}/deactivate"
        answer = httpx.post(deactivate, headers=bearer(admin_token(system)), json={"reason": "abuse"}, timeout=30)
        assert answer.status_code == 200, answer.text
        asked = time.monotonic()
        closing: dict[str, Any] = stream.next(within=5.0)
        print(f"\nlimits: a deactivated user's stream closed {time.monotonic() - asked:.1f} s after the answer")
        assert (closing["event"], closing["data"]) == ("closed", {"reason": "This account is deactivated."})
        assert stream.ended(within=5.0)
    late = httpx.get(f"{system.url('projections')}/api/user/credits/stream", params={"ticket": unused}, timeout=30)
    assert late.status_code == 403, "a ticket issued before the deactivation opens nothing after it"


def test_a_transform_past_max_pixels_is_refused_at_the_door_and_costs_nothing(system: System) -> None:
    token, user_id = welcomed(system)
    source = upload(system, token, image("PNG", (64, 48))).json()["id"]
    assert completed(system, token, source)["status"] == "COMPLETED"
    ledger = f"{system.url('ledger')}/api/accounts/{user_id}"
    wait_until(lambda: httpx.get(ledger, headers=bearer(token), timeout=30).json()["balance"] == 9,
               timeout=20, what="the upload captured")  # fmt: skip
    spec = {"resize": {"width": 8000, "height": 8000}, "rotate": 45}
    refused = command(system, token, f"/api/images/{source}/transform", spec)
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert "the resize would make 8000 x 8000 = 64,000,000 pixels" in problem["detail"]
    assert "MAX_PIXELS" in problem["detail"] and problem["max_pixels"] == 40_000_000
    mine = httpx.get(f"{system.url('media')}/api/images", headers=bearer(token), timeout=30).json()["images"]
    assert [i["id"] for i in mine] == [source], "the refusal kept no record"
    view = assert_converged(system, token, user_id)
    assert [e["amount"] for e in view["entries"]] == [-1, 10], "only the upload was paid for"
    assert httpx.get(ledger, headers=bearer(token), timeout=30).json()["reserved"] == 0, "and nothing is held"
