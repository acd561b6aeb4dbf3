"""Soak bench: runs tests/support/soak.py (the rig lives with the loopback fake Discord it drives).

    python bench/soak.py [--jobs 500] [--users 25] [--baseline 100]

A subprocess rather than an import, so bench/ imports nothing from tests/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    sys.exit(subprocess.run([sys.executable, "-m", "tests.support.soak", *sys.argv[1:]], cwd=ROOT).returncode)
