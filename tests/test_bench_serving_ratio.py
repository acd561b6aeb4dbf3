"""Smoke test: the serving-ratio bench runs end to end (fake Discord, real bot process, raw loop) and prints
both figures; the figures themselves are the bench's business, not a test's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_serving_ratio_bench_quick_prints_ratio_and_acknowledgements() -> None:
    result = subprocess.run(
        [sys.executable, "bench/serving_ratio.py", "--quick"],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:4] == ["rep", "raw", "bot", "ratio"])
    rows = [line.split() for line in lines[header + 2 : header + 4]]
    assert [row[0] for row in rows] == ["#1", "median"]
    raw, bot, ratio = (float(value) for value in rows[0][1:4])
    assert raw > 0 and bot > 0 and abs(ratio - bot / raw) < 0.01
    assert "batches" in lines[header + 2]  # how the bot batched the jobs
    assert re.search(r"serving ratio \(bot / raw images/s, median of 1\): \d+\.\d+x", result.stdout)
    busy = re.search(r"while the GPU loop is busy \(median of 1\): (\d+\.\d) ms", result.stdout)
    idle = re.search(r"idle: (\d+\.\d) ms", result.stdout)
    assert busy and idle and float(busy[1]) > 0 and float(idle[1]) > 0
    assert "errors: 0" in result.stdout
