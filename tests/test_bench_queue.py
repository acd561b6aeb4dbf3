"""Smoke test: the queue benchmark runs end to end (simulation + real tiny model) and prints both tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_queue_bench_quick_prints_both_tables() -> None:
    result = subprocess.run(
        [sys.executable, "bench/queue_sim.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    lines = result.stdout.splitlines()
    sim_header = next(i for i, line in enumerate(lines) if line.startswith("scheduler "))
    assert lines[sim_header].split() == [
        *("scheduler", "max_batch", "Jain", "wait", "p50", "wait", "p99", "resp", "p50", "heavy", "done"),
        "images/s",
    ]
    assert [line.split()[:2] for line in lines[sim_header + 1 : sim_header + 5]] == [
        ["fifo", "1"],
        ["fifo", "4"],
        ["fair", "1"],
        ["fair", "4"],
    ]
    real_header = next(i for i, line in enumerate(lines) if line.startswith("run "))
    assert lines[real_header].split() == [
        *("run", "max_batch", "images/s", "wait", "p50", "wait", "p99", "lat", "p50", "lat", "p99"),
        *("heavy", "done", "calls", "batch", "busy"),
    ]
    rows = [line.split() for line in lines[real_header + 1 :] if line.strip()]
    assert [row[:2] for row in rows] == [["#1", "1"], ["#2", "4"]]
    assert all(float(row[2]) > 0 for row in rows)  # images/s
    assert "Real model:" in result.stdout and "torch 1 thread(s)" in result.stdout
