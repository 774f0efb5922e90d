"""GET /metrics on every service and the media worker, in Prometheus text format, after what a frontend and a
provider do (a debit, an upload, a signed Clerk webhook, a burst of stream tickets): the families of
shared/metrics.py with their values, and no label that names a user, a job or an event; `creditstream top`
shows them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import bearer, clerk_delivery, clerk_user, new_clerk_id
from tests.e2e.convergence import welcomed
from tests.e2e.test_auto_recharge import debit
from tests.e2e.test_media_images import get, image, upload

# Any id the system makes or is given: a UUID, a Clerk id, an email, a Stripe object id.
AN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-|^user_|@|^(pi|cus|evt|sub|in|ch)_[A-Za-z0-9]{6,}|^msg_")
Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name].append((dict(sample.labels), sample.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for found, v in samples.get(name, []) if labels.items() <= found.items())


def test_every_process_answers_its_families_with_bounded_labels(system: System) -> None:
    token, user_id = welcomed(system)
    spent = debit(system, token, user_id, 2)
    assert spent.status_code == 201, spent.text
    uploaded = upload(system, token, image())
    assert uploaded.status_code == 202, uploaded.text
    wait_until(
        lambda: get(system, token, f"/api/images/{uploaded.json()['id']}").json()["status"] == "COMPLETED",
        timeout=30,
        what="the upload made",
    )
    clerk_id = new_clerk_id()
    body, headers = clerk_delivery(
        system.env["CLERK_WEBHOOK_SECRET"], "user.created", clerk_user(clerk_id, f"{clerk_id}@example.com")
    )
    hook = httpx.post(f"{system.url('identity')}/webhooks/clerk", content=body, headers=headers, timeout=30)
    assert hook.status_code == 200, hook.text
    again = httpx.post(f"{system.url('identity')}/webhooks/clerk", content=body, headers=headers, timeout=30)
    assert again.json()["duplicate"] is True
    tampered = httpx.post(f"{system.url('identity')}/webhooks/clerk", content=body + b" ", headers=headers, timeout=30)
    assert tampered.status_code == 400
    ticket_url = f"{system.url('projections')}/api/user/credits/stream-ticket"
    tickets = [httpx.post(ticket_url, headers=bearer(token), timeout=30).status_code for _ in range(11)]
    assert tickets.count(429) >= 1

    scraped = {name: scrape(process.url) for name, process in system.services.items()}
    assert set(scraped) == {"identity", "ledger", "payments", "media", "projections", "media-worker"}

    ledger = scraped["ledger"]
    assert value(ledger, "creditstream_ledger_commands_total", command="Debit", outcome="applied") >= 1
    assert value(ledger, "creditstream_ledger_commands_total", command="Welcome", outcome="applied") >= 1
    assert value(ledger, "creditstream_ledger_batch_size_count") >= 2
    route = {"http_route": "/api/accounts/{user_id}/debits", "http_request_method": "POST"}
    assert value(ledger, "http_server_request_duration_seconds_count", **route, http_response_status_code="201") >= 1
    assert "creditstream_relay_backlog_events" in ledger
    assert {labels["consumer"] for labels, _ in ledger["creditstream_consumer_pending_messages"]} >= {
        "ledger-identity", "ledger-payments", "ledger-media", "ledger-access",
    }  # fmt: skip
    assert value(ledger, "creditstream_deadletters", consumer="ledger-identity") == 0

    identity = scraped["identity"]
    assert value(identity, "creditstream_webhooks_total", source="clerk", outcome="applied") >= 1
    assert value(identity, "creditstream_webhooks_total", source="clerk", outcome="duplicate") >= 1
    assert value(identity, "creditstream_webhooks_total", source="clerk", outcome="bad_signature") >= 1
    assert value(identity, "creditstream_relay_backlog_events", relay="outbox-relay") >= 0

    worker = scraped["media-worker"]
    assert value(worker, "creditstream_media_jobs_total", operation="image_upload", outcome="completed") >= 1
    assert value(worker, "creditstream_media_job_duration_seconds_count", operation="image_upload") >= 1
    assert "media-worker" in {labels["consumer"] for labels, _ in worker["creditstream_consumer_pending_messages"]}

    projections = scraped["projections"]
    assert value(projections, "creditstream_rate_limited_total", route_class="stream-tickets") >= 1
    assert {labels["model"] for labels, _ in projections["creditstream_projection_lag_seconds"]} == {
        "identity", "ledger", "payments", "media",
    }  # fmt: skip
    assert all(lag >= 0 for _, lag in projections["creditstream_projection_lag_seconds"])

    for name, samples in scraped.items():
        assert "creditstream_nats_permission_denied_total" in samples, name
        assert value(samples, "creditstream_nats_permission_denied_total") == 0, name
        for metric, found in samples.items():
            for labels, _ in found:
                assert not {"user_id", "user", "job_id"} & labels.keys(), (name, metric, labels)
                # target_info's service_instance_id is the process's own: one series per process, not per request.
                named = [v for k, v in labels.items() if AN_ID.search(v) and k != "service_instance_id"]
                assert not named, (name, metric, labels)


def test_top_shows_every_process_its_rates_and_queues(system: System) -> None:
    ports = {f"{name.upper().replace('-', '_')}_PORT": str(p.port) for name, p in system.services.items()}
    command = [str(Path(sys.executable).parent / "creditstream"), "top", "--once", "--interval", "0.5"]
    env = {**os.environ, **system.env, **ports, "COLUMNS": "200"}
    shown = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for process in ("identity", "ledger", "payments", "media", "media-worker", "projections"):
        assert process in shown.stdout
    assert shown.stdout.count("ready") >= 6 and "not ready" not in shown.stdout and "no answer" not in shown.stdout
    for row in ("consumer ledger-identity", "consumer media-worker", "relay ledger-relay", "read model ledger"):
        assert row in shown.stdout, shown.stdout
