"""Smoke test: the Ray workers bench runs end to end on tiny numbers and prints both figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_bench_prints_throughput_for_one_and_two_workers_and_the_overhead() -> None:
    result = subprocess.run(
        [sys.executable, "bench/cluster.py", "--quick"],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["workers", "images/s", "seconds"])
    rows = [lines[header + 1].split(), lines[header + 2].split()]
    assert [row[0] for row in rows] == ["1", "2"] and all(float(row[1]) > 0 for row in rows)
    assert re.search(r"^ratio 2 workers / 1 worker: \d+\.\d\dx$", result.stdout, re.MULTILINE)
    overhead = r"local path \d+\.\d+ s, Ray path \d+\.\d+ s, overhead [+-]\d+\.\d% \(target <= 5%\)"
    assert re.search(overhead, result.stdout)
