"""The fault cases' summary: one row per case run under load, printed at the end of the run and kept in
test-artifacts/faults.md (the table the issue asks for)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.verdict import ROWS, table

ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "faults.md"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    text = table(ROWS)
    terminalreporter.write_sep("=", "fault cases under load")
    terminalreporter.write_line(text)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(text + "\n")
