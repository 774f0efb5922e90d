"""A real Prometheus for the tests (Debian's `prometheus` package: .ci/run installs it): it scrapes the given
processes every second and evaluates deploy/prometheus/alerts.yml every second, on a free port, its data in a
directory of its own."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from shared.testing.waiting import free_port, stop, wait_until

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


class EmbeddedPrometheus:
    def __init__(self, workdir: Path, targets: Mapping[str, str]) -> None:
        """`targets`: job name → host:port of a process serving /metrics."""
        self._dir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._targets = dict(targets)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> EmbeddedPrometheus:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: .ci/run installs Debian's package (apt-get install prometheus)"
        self._dir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in self._targets.items()
            ],
        }
        (self._dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = (self._dir / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={self._dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, timeout=30, interval=0.2, what="prometheus /-/ready")
        return self

    def _ready(self) -> bool:
        assert self._process is not None and self._process.poll() is None, self.log()
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        path = self._dir / "prometheus.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self._process is not None:
            stop(self._process)

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def targets_up(self) -> dict[str, str]:
        """Each job's health as Prometheus last scraped it: up, down or unknown."""
        return {t["labels"]["job"]: t["health"] for t in self.api("targets")["activeTargets"]}

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def firing(self, alert: str) -> list[dict[str, str]]:
        """The labels of each firing instance of `alert`."""
        return [
            a["labels"]
            for a in self.api("alerts")["alerts"]
            if a["labels"]["alertname"] == alert and a["state"] == "firing"
        ]
