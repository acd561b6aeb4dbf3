"""A full disk: its errors told apart (files and SQLite), room checked again, jobs counted for metrics."""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

import pytest

from storage import Store
from storage.records import JobStatus
from storage.space import free_bytes_below, is_storage_full
from tests.storage.factories import generated, txt2img
from tests.support.full_disk import full_disk


def real_sqlite_full(tmp_path: Path) -> sqlite3.OperationalError:
    """The error SQLite itself raises when it cannot grow the file (max_page_count stands in for the disk)."""
    connection = sqlite3.connect(tmp_path / "small.sqlite3")
    try:
        connection.execute("CREATE TABLE t (x BLOB)")
        connection.commit()
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(sqlite3.OperationalError) as raised:
            connection.execute("INSERT INTO t VALUES (?)", (bytes(64 * 1024),))
            connection.commit()
        return raised.value
    finally:
        connection.close()


def test_full_disk_errors_are_told_apart_from_other_failures(tmp_path: Path) -> None:
    sqlite_full = real_sqlite_full(tmp_path)
    assert "database or disk is full" in str(sqlite_full)
    assert is_storage_full(sqlite_full)
    assert is_storage_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_storage_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as cause:
            raise RuntimeError("could not store") from cause
    except RuntimeError as wrapped:
        assert is_storage_full(wrapped)  # what caused it counts
    assert not is_storage_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_storage_full(sqlite3.OperationalError("database is locked"))
    assert not is_storage_full(ValueError("no"))


def test_free_bytes_below_names_the_directory_short_of_room(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    assert free_bytes_below([tmp_path], margin=1) is None
    assert free_bytes_below([tmp_path], margin=free * 2 + 1) == tmp_path


async def test_room_is_checked_by_writing_as_an_image_would(
    store: Store, images_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await store.has_room()
    with full_disk(monkeypatch) as disk:
        assert not await store.has_room()
        assert disk.refused  # it did try to write
        disk.free()
        assert await store.has_room()
    assert not await store.has_room(margin=shutil.disk_usage(images_dir).free * 2 + 1)
    assert not [p for p in images_dir.rglob("*") if p.is_file()]  # the probe leaves nothing behind


async def test_a_full_disk_leaves_the_job_running_and_its_images_unwritten(
    store: Store, images_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await store.create_job(txt2img(), user_id=1, guild_id=None, channel_id=None)
    await store.mark_running([job.id])
    with full_disk(monkeypatch), pytest.raises(OSError) as raised:
        await store.finish_job(job.id, [generated()])
    assert is_storage_full(raised.value)
    assert (await store.get_job(job.id)).status is JobStatus.RUNNING  # nothing recorded: the worker decides
    assert not list(images_dir.rglob("*.png"))
    assert await store.return_to_queue([job.id]) == [job.id]
    back = await store.get_job(job.id)
    assert (back.status, back.attempts) == (JobStatus.QUEUED, 0)  # the disk is not the job's fault


async def test_jobs_are_counted_by_status(store: Store) -> None:
    assert await store.count_by_status() == dict.fromkeys(JobStatus, 0)
    jobs = [await store.create_job(txt2img(f"job {i}"), user_id=1, guild_id=None, channel_id=None) for i in range(4)]
    await store.mark_running([jobs[0].id, jobs[1].id])
    await store.finish_job(jobs[0].id, [generated()])
    await store.cancel_job(jobs[2].id)
    counts = await store.count_by_status()
    assert counts == {
        JobStatus.QUEUED: 1,
        JobStatus.RUNNING: 1,
        JobStatus.DONE: 1,
        JobStatus.FAILED: 0,
        JobStatus.CANCELLED: 1,
    }
