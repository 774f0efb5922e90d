"""Fixtures of the end-to-end tests that more than one module uses."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.e2e.browsing import CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not shutil.which(CHROMIUM) and not os.environ.get("CI"):
        pytest.skip(f"no {CHROMIUM} here: `apt-get install chromium` (.ci/run installs it; in CI this fails)")
    with sync_playwright() as playwright:
        # No sandbox: CI runs as root.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()
