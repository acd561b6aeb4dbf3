"""The reliability table: every scenario records fault or input → expected → observed.

conftest.py prints it at the end of the run (and writes it as Markdown to $RELIABILITY_TABLE when set).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One scenario and how it went."""

    area: str
    case: str
    expected: str
    observed: str
    ok: bool


ROWS: list[Row] = []


def check(area: str, case: str, expected: str, observed: str, ok: bool = True) -> None:
    """Record a row, then fail the test when the scenario did not go as expected."""
    ROWS.append(Row(area, case, expected, observed, ok))
    assert ok, f"{case}: expected {expected}; observed {observed}"


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table, in the order they ran."""
    lines = ["| area | fault or input | expected | observed | ok |", "|---|---|---|---|---|"]
    for row in rows:
        cells = [row.area, row.case, row.expected, row.observed, "✅" if row.ok else "❌"]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)
