"""deploy/prometheus and deploy/grafana, checked with Prometheus's own promtool (Debian's `prometheus` package,
installed by .ci/run): the scrape config and the alert rules are valid, each alert fires on the series that
should raise it (alerts.test.yml), and every query of the rules and of the dashboard reads only metrics the
processes export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shared import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "creditstream.json"
# What Prometheus itself gives every target, and FastAPI's telemetry through our meter provider.
OTHERS = {"up", "http_server_request_duration_seconds"}
SUFFIXES = ("_total", "_bucket", "_count", "_sum")
METRIC = re.compile(r"\b((?:creditstream|http_server)_[a-z_]+|up)\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: .ci/run installs Debian's prometheus package (apt-get install prometheus)"
    return subprocess.run([tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60, check=False)


def exported() -> set[str]:
    """The Prometheus names of shared/metrics.py's instruments, as the exporter writes them."""
    names = set(OTHERS)
    for instrument in vars(metrics).values():
        # Before a provider is installed, an instrument is the API's proxy, which keeps them as _name, _unit.
        name = getattr(instrument, "name", None) or getattr(instrument, "_name", None)
        unit = getattr(instrument, "unit", None) or getattr(instrument, "_unit", "")
        if isinstance(name, str) and name.startswith("creditstream."):
            names.add(name.replace(".", "_") + ("_seconds" if unit == "s" else ""))
    return names


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in exported():
            return name.removesuffix(suffix)
    return name


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "config", "prometheus-local.yml"),
        ("check", "rules", "alerts.yml"),
    ],
)
def test_the_config_and_the_rules_are_valid(args: tuple[str, ...]) -> None:
    checked = promtool(*args)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_each_alert_fires_on_what_should_raise_it() -> None:
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tested_alerts = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts.test.yml").read_text()))
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    untested = {rule["alert"] for rule in rules} - tested_alerts
    assert untested <= {"CreditstreamNatsPermissionDenied", "CreditstreamNotReady", "CreditstreamAuditStale"}


def test_every_query_reads_metrics_the_processes_export() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [rule["expr"] for rule in rules] + [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(dashboard["panels"]) >= 12 and all(p["targets"] for p in dashboard["panels"])
    read = {base(name) for query in queries for name in METRIC.findall(query)}
    assert read - exported() == set(), "queries of metrics nobody exports"
    unread = exported() - read
    assert unread == set(), f"metrics no alert or panel shows: {unread}"
