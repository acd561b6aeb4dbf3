"""Crash recovery: SIGKILL mid-batch, start again on the same file, everything completes once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def spawn(db: Path, images: Path, model: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.jobs.restart_worker", str(db), str(images), str(model), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def statuses(db: Path) -> Counter:
    connection = sqlite3.connect(db, timeout=10)
    try:
        return Counter(status for (status,) in connection.execute("SELECT status FROM jobs"))
    except sqlite3.OperationalError:  # not migrated yet
        return Counter()
    finally:
        connection.close()


def test_sigkill_mid_batch_then_restart_completes_every_job_once(tmp_path: Path, tiny_sd_dir: Path) -> None:
    db, images = tmp_path / "db.sqlite3", tmp_path / "images"
    first = spawn(db, images, tiny_sd_dir, "--submit", "20")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until a batch is on the GPU and some work is already done
        if db.exists():
            counts = statuses(db)
            if counts["running"] and counts["done"] >= 2:
                break
        time.sleep(0.05)
    else:
        first.kill()
        raise AssertionError(f"never saw a running batch: {first.communicate()}")
    os.kill(first.pid, signal.SIGKILL)
    out_first, _ = first.communicate(timeout=30)
    interrupted = statuses(db)["running"]
    assert interrupted >= 1

    second = spawn(db, images, tiny_sd_dir)
    out_second, err_second = second.communicate(timeout=300)
    assert second.returncode == 0, err_second

    deliveries = Counter(
        line.split()[1] for line in (out_first + out_second).splitlines() if line.startswith("DELIVERED")
    )
    assert all(n == 1 for n in deliveries.values()), deliveries
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        jobs = connection.execute("SELECT id, status, attempts, delivered_at, params FROM jobs").fetchall()
        assert len(jobs) == 20
        assert all(status == "done" and delivered for _, status, _, delivered, _ in jobs)
        assert sum(attempts for _, _, attempts, _, _ in jobs) == 20 + interrupted  # retried once each
        rows = connection.execute("SELECT job_id, idx, path FROM images").fetchall()
    expected = sum(1 + i % 2 for i in range(20))
    assert len(rows) == expected and len({(j, i) for j, i, _ in rows}) == expected
    files = {p.relative_to(images).as_posix() for p in (images / "jobs").rglob("*.png")}
    assert files == {path for _, _, path in rows}  # no orphaned or missing files
