"""A reader that cannot apply an event is an alarm, not a silent loss. Projections is broken on
purpose (a trigger refuses one user's entries, as a bug would): the event is dead-lettered, projections'
GET /alarms names it while its /readyz stays 200 (it serves everyone else as before), the operator CLI
shows and lists it, a real Prometheus scraping the system sees creditstream_deadletters at 1 and fires
CreditstreamDeadLetters (deploy/prometheus/alerts.yml), and after the fix a re-drive applies it once, the
alert clears and projections equal the ledger again. A stored event the relay cannot publish is the
ledger's alarm, naming it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from services.ledger import store
from services.ledger.application import Ledger
from services.ledger.commands import Debit
from shared import keys
from shared.scopes import Scope
from shared.service_tokens import DEV_KEY_FILE, ServiceKey
from shared.testing.prometheus import EmbeddedPrometheus
from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import bearer
from tests.e2e.convergence import assert_converged, assert_new_user_gets_the_welcome_bonus, welcomed
from tests.integration.test_ledger_support import grant, ledger_cluster

CLI = str(Path(sys.executable).parent / "creditstream")


def cli(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**system.env, "COLUMNS": "250"}
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def readiness(url: str) -> tuple[int, str]:
    response = httpx.get(f"{url}/readyz", timeout=10)
    return response.status_code, response.json().get("detail", "")


def ops(url: str, service: str, data_dir: Path, path: str, method: str = "GET") -> httpx.Response:
    """A call to the service's ops routes as the operator CLI makes it (a service token of the dev key)."""
    key = ServiceKey.of_private(keys.load_or_create(data_dir / DEV_KEY_FILE))
    token = key.sign("test", audience=service, scopes=[Scope(f"{service}:alarms")])
    return httpx.request(method, f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def alarms(url: str, service: str, data_dir: Path) -> str:
    """The service's alarms, joined."""
    response = ops(url, service, data_dir, "/alarms")
    assert response.status_code == 200, response.text
    return "; ".join(response.json()["alarms"])


@pytest.fixture
def prometheus(isolated_system: System, tmp_path: Path) -> Iterator[EmbeddedPrometheus]:
    targets = {name: p.url.removeprefix("http://") for name, p in isolated_system.services.items()}
    running = EmbeddedPrometheus(tmp_path / "prometheus", targets).start()
    try:
        wait_until(lambda: set(running.targets_up().values()) == {"up"} and len(running.targets_up()) == 6,
                   timeout=30, what="prometheus scraping every process")  # fmt: skip
        yield running
    finally:
        running.stop()


def scalar(prometheus: EmbeddedPrometheus, expr: str) -> float | None:
    found = prometheus.query(expr)
    return float(found[0]["value"][1]) if found else None


def test_a_dead_lettered_event_alarms_until_it_is_re_driven_after_the_fix(
    isolated_system: System, prometheus: EmbeddedPrometheus
) -> None:
    system = isolated_system
    token, user_id = welcomed(system)
    with psycopg.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION projections.refuse_entry() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER broken BEFORE INSERT ON projections.credit_entries FOR EACH ROW"
            f" WHEN (NEW.user_id = '{user_id}') EXECUTE FUNCTION projections.refuse_entry()"
        )
    spent = httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/debits",
        json={"amount": 3, "description": "resize"},
        headers={**bearer(token), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert spent.status_code == 201, spent.text
    debits = 'sum(creditstream_ledger_commands_total{job="ledger", command="Debit", outcome="applied"})'
    wait_until(lambda: (scalar(prometheus, debits) or 0) >= 1, timeout=30, what="the debit counted in Prometheus")

    projections, data_dir = system.url("projections"), Path(system.env["DATA_DIR"])
    wait_until(
        lambda: "projections-ledger: 1" in alarms(projections, "projections", data_dir),
        timeout=30,
        what="projections' alarm naming its parked message",
    )
    assert readiness(projections) == (200, ""), "one parked message takes no copy out of service"
    assert alarms(system.url("ledger"), "ledger", data_dir) == ""
    assert_new_user_gets_the_welcome_bonus(system)  # one poison event holds up nothing else
    parked = 'creditstream_deadletters{job="projections", consumer="projections-ledger"}'
    wait_until(lambda: scalar(prometheus, parked) == 1, timeout=30, what="the dead letter in Prometheus")
    wait_until(lambda: bool(prometheus.firing("CreditstreamDeadLetters")), timeout=30, what="the alert firing")
    [alert] = prometheus.firing("CreditstreamDeadLetters")
    assert (alert["job"], alert["consumer"], alert["severity"]) == ("projections", "projections-ledger", "page")
    assert scalar(prometheus, 'min(creditstream_ready{job="projections"})') == 1

    streams = cli(system, "streams")
    assert streams.returncode == 1, streams.stdout + streams.stderr
    assert "projections-ledger" in streams.stdout and "dead-lettered messages wait" in streams.stdout
    assert streams.stdout.count("ready") >= 5 and "not ready" not in streams.stdout
    listed = cli(system, "deadletters")
    assert listed.returncode == 0, listed.stderr
    assert "ledger.credits.debited" in listed.stdout and "the disk is full" in listed.stdout

    refused = cli(system, "deadletters", "redrive")
    assert refused.returncode == 1 and "failed" in refused.stdout and "0 of 1" in refused.stdout

    # The same over HTTP, as the admin console does it: the service that parked it lists it and re-drives it.
    [letter] = ops(projections, "projections", data_dir, "/dead-letters").json()["letters"]
    assert (letter["consumer"], letter["subject"], letter["event_type"]) == (
        "projections-ledger", "ledger.credits.debited", "ledger.credits.debited",
    )  # fmt: skip
    assert "the disk is full" in letter["reason"] and letter["origin_stream"] == "LEDGER"
    assert ops(system.url("ledger"), "ledger", data_dir, "/dead-letters").json()["letters"] == []
    redrive = f"/dead-letters/{letter['seq']}/redrive"
    assert ops(system.url("ledger"), "ledger", data_dir, redrive, "POST").status_code == 404, "not the ledger's"
    failing = ops(projections, "projections", data_dir, redrive, "POST")
    assert failing.status_code == 409 and "the disk is full" in failing.json()["detail"], failing.text
    as_user = httpx.get(f"{projections}/dead-letters", headers=bearer(token), timeout=10)
    assert as_user.status_code == 403

    with psycopg.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("DROP TRIGGER broken ON projections.credit_entries")  # the fix
    redriven = ops(projections, "projections", data_dir, redrive, "POST")
    assert redriven.status_code == 200, redriven.text
    assert redriven.json() == {"seq": letter["seq"], "consumer": "projections-ledger", "status": "applied"}
    assert ops(projections, "projections", data_dir, redrive, "POST").status_code == 404, "applied once, then gone"
    assert alarms(projections, "projections", data_dir) == ""
    wait_until(lambda: not prometheus.firing("CreditstreamDeadLetters"), timeout=30, what="the alert cleared")
    assert scalar(prometheus, parked) == 0
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("USAGE", -3), ("BONUS", 10)]
    again = cli(system, "deadletters", "redrive")
    assert again.returncode == 0 and "0 of 0" in again.stdout
    assert cli(system, "streams").returncode == 0


def test_a_stored_event_the_relay_cannot_publish_is_the_ledgers_alarm(database_url: str, tmp_path: Path) -> None:
    with ledger_cluster(database_url, tmp_path) as cluster:
        user = str(uuid.uuid4())
        grant(cluster, user, 5)

        ledger = Ledger(env=store.eventsourcing_env(cluster.database_url))
        try:
            ledger.execute_batch([Debit(user_id=user, key="old", entry_type="USAGE", amount=1, description="a \x00 b")])
        finally:
            ledger.close()
        wait_until(
            lambda: "LedgerRelay has failed for" in alarms(cluster.url(), "ledger", cluster.data_dir),
            timeout=30,
            what="the ledger's alarm naming the stuck relay",
        )
        detail = alarms(cluster.url(), "ledger", cluster.data_dir)
        assert readiness(cluster.url()) == (200, ""), "it still serves every command"
        assert "LedgerRelay has failed for" in detail and "NotificationError: notification" in detail
        assert "CreditAccount.Debited" in detail


def test_every_query_of_the_dashboard_and_the_alerts_runs_on_the_real_prometheus(
    prometheus: EmbeddedPrometheus,
) -> None:
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    rules = yaml.safe_load((deploy / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    panels = json.loads((deploy / "grafana" / "creditstream.json").read_text())["panels"]
    for query in [rule["expr"] for rule in rules] + [t["expr"] for p in panels for t in p["targets"]]:
        prometheus.query(query)  # a query Prometheus cannot parse or run is a failed API call
    wait_until(
        lambda: bool(prometheus.query("sum by (job) (creditstream_ready)")), timeout=30, what="readiness scraped"
    )
    ready = {r["metric"]["job"]: float(r["value"][1]) for r in prometheus.query("sum by (job) (creditstream_ready)")}
    assert ready == dict.fromkeys(["identity", "ledger", "payments", "media", "media-worker", "projections"], 1.0)
    assert prometheus.firing("CreditstreamDown") == []
