"""Reliability tests: faults, bad input, soak and security; prints the table of what was checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.bot.conftest import bot_engine, start_bot  # noqa: F401  (the in-process bot, for bad input)
from tests.reliability.table import ROWS, markdown


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print fault or input → expected → observed for every scenario that ran."""
    if not ROWS:
        return
    table = markdown(ROWS)
    terminalreporter.section("reliability: fault or input → expected → observed")
    terminalreporter.write_line(table)
    if target := os.environ.get("RELIABILITY_TABLE"):
        Path(target).write_text(table + "\n")
