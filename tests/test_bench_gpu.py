"""bench/gpu.py end to end in its smallest reduced-size CPU mode: every section runs and reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EXPECTED_ROWS = [
    "[params] SD1.5 unet, full size",
    "[params] SDXL unet, full size",
    "[sd15 raw] diffusers, batch 1,",
    "[sd15 raw] diffusers, batch 2,",
    "[sd15 overhead] raw diffusers, 1 request",
    "[sd15 overhead] queue+worker, previews every 5 steps (default), 1 request",
    "[sd15 serving] queue+worker, 2 users",
    "[variants] SDPA (AttnProcessor2_0, default)",
    "[variants] classic attention (AttnProcessor)",
    "[variants] channels_last UNet+VAE",
    '[compile] torch.compile(unet, mode="max-autotune-no-cudagraphs")',
    '[cudagraphs] torch.compile(unet, mode="reduce-overhead")',
    "[preview] TAESD decode",
    "[preview] full VAE decode",
    "[preview] linear 4x3",
    "[sdxl raw] diffusers",
    "[sdxl serving] queue+worker, Poisson 2 req/s",
]


def test_quick_cpu_run_prints_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--quick", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout
    assert text.startswith("NO GPU: reduced-size CPU run; figures are not comparable to the targets")
    table = text[text.rindex("elapsed per section:") :]  # the final table, after the per-section progress
    for row in EXPECTED_ROWS:
        assert row in table, row
    assert "FAILED" not in text
    assert table.count("match") == 5 and "MISMATCH" not in table  # full-size parameter counts
    assert "skipped on CPU" in table
    assert "img/s" in table and "p99" in table and "submit→JobDone" in table
    markdown = out.read_text(encoding="utf-8")
    assert "| section | configuration | throughput |" in markdown
    assert markdown.count("\n| ") >= len(EXPECTED_ROWS) + 1
