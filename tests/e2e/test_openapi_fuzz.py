"""schemathesis against the OpenAPI of all five services, with a user's token and an admin's: no 5xx,
every status, content type and body as documented, schema-valid requests accepted and invalid ones
refused. Bounded (a fixed number of cases per operation, a fixed seed) to stay within CI's budget;
run `st run` by hand with other seeds and more cases to look further. It runs on a system of its
own: its stateful phase follows links (a listed user into a deactivation) that would touch other
tests' users."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shared.settings import SERVICES
from tests.conftest import System
from tests.e2e.auth_support import admin_token, signed_in
from tests.e2e.convergence import assert_new_user_gets_the_welcome_bonus, parked_messages

ST = str(Path(sys.executable).parent / "st")
CONFIG = str(Path(__file__).with_name("schemathesis.toml"))
CASES_PER_OPERATION = 40
SEED = 20261125


def fuzz(url: str, token: str) -> subprocess.CompletedProcess[str]:
    command = [ST, "--config-file", CONFIG, "run", f"{url}/openapi.json", "--header", f"Authorization: Bearer {token}",
               "--checks", "all", "--max-examples", str(CASES_PER_OPERATION), "--seed", str(SEED), "--no-shrink",
               # One worker: CPython 3.11's ast.parse is not thread-safe (gh-106905) and hypothesis calls it.
               "--workers", "1", "--request-timeout", "10"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("service", SERVICES)
def test_every_documented_operation_holds_to_its_documentation_under_fuzzing(
    isolated_system: System, service: str
) -> None:
    system = isolated_system
    user_token, _ = signed_in(system)
    for who, token in (("user", user_token), ("admin", admin_token(system))):
        run = fuzz(system.url(service), token)
        summary = re.search(r"(\d+) generated, (.*)", run.stdout)
        assert run.returncode == 0 and summary, f"{service} as {who}:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
        print(f"{service} as {who}: {summary.group(0)}")  # shown with -s: the figures for a note
    assert parked_messages(system) == {}
    for name, process in system.services.items():
        assert httpx.get(f"{process.url}/readyz").status_code == 200, name
    assert_new_user_gets_the_welcome_bonus(system)
