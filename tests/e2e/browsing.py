"""The browser the page tests drive: Debian's chromium through Playwright (its own download cannot work here),
and where their screenshots go. The `browser` fixture is in tests/e2e/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS") or Path(__file__).parents[2] / "test-artifacts")
