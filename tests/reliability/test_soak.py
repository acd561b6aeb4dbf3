"""A shorter run of bench/soak.py: many users' jobs through one real bot process, no errors, flat memory."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.table import check
from tests.support.soak import run_soak

JOBS, USERS, BASELINE = 200, 20, 100  # bench/soak.py: 500 jobs from 25 users, also measured from job 100


async def test_soak_many_users_no_errors_and_flat_memory(tiny_sd_dir: Path, tmp_path: Path) -> None:
    report = await run_soak(JOBS, USERS, tmp_path, tiny_sd_dir, baseline_at=BASELINE)
    print("\n".join(report.lines()))
    check(
        "soak",
        f"{JOBS} jobs from {USERS} users (txt2img, grids, img2img, remix replies); bench/soak.py runs 500",
        f"zero errors; resident memory growth under 10% from job {BASELINE} to the last",
        f"{len(report.errors)} errors {report.errors[:2]}; RSS {report.rss_baseline / 2**20:.0f} → "
        f"{report.rss_end / 2**20:.0f} MiB ({report.growth * 100:+.1f}%) in {report.seconds:.0f} s",
        not report.errors and report.growth < 0.10,
    )
