"""Serving ratio: the real `imagine-bot run` process vs a raw diffusers loop on the same tiny pipeline.

    python bench/serving_ratio.py [--reps 3] [--threads N] [--background N] [--quick]

24 single-image /imagines from 8 members through the loopback fake Discord, 512², 20 steps, previews on,
against the pipeline called in batches of 4 with nothing around it; runs interleaved, medians of the
repetitions: images/s of each, their ratio (target >= 0.97x) and interaction acknowledgement p50/p99 idle
and while the GPU loop is busy (target p99 < 50 ms). The rig lives in tests/support/serving_ratio.py, with
the fake Discord it drives; a subprocess rather than an import, so bench/ imports nothing from tests/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    command = [sys.executable, "-m", "tests.support.serving_ratio", *sys.argv[1:]]
    sys.exit(subprocess.run(command, cwd=ROOT).returncode)
