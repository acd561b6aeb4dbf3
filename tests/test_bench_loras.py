"""Smoke test: the LoRA bench runs end to end and prints both figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_lora_bench_prints_switch_and_training_figures() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "bench/loras.py", "--rounds", "2", "--train-steps", "3", "--wait-steps", "6", "--chunk", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    assert "resident switch" in result.stdout and "unload + load" in result.stdout
    assert "steps/s" in result.stdout and "peak RSS" in result.stdout
    assert result.stdout.count("Longest /imagine wait") == 2  # in chunks, and as one chunk
