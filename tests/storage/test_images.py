"""Result images: files on disk that match their rows, written atomically, deletable."""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from PIL import Image

from generation.atomic import TEMP_SUFFIX
from generation.metadata import read_parameters
from generation.results import GeneratedImage
from storage import JobStatus, Store, UnknownJob
from storage.files import ImageFiles
from tests.storage.factories import generated, txt2img


def _leftover_temps(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.endswith(TEMP_SUFFIX)]


async def _running_job(store: Store, count: int = 2) -> int:
    job = await store.create_job(txt2img(count=count), user_id=1, guild_id=2, channel_id=3)
    await store.mark_running([job.id])
    return job.id


async def test_finish_writes_files_matching_their_rows(store: Store, images_dir: Path) -> None:
    job_id = await _running_job(store)
    results = [generated(0, seed=42, color=(255, 0, 0)), generated(1, seed=43, color=(0, 0, 255))]
    records = await store.finish_job(job_id, results)

    assert [(r.idx, r.seed, r.width, r.height, r.nsfw) for r in records] == [
        (0, 42, 64, 64, None),
        (1, 43, 64, 64, None),
    ]
    for record, result in zip(records, results, strict=True):
        path = store.image_path(record)
        assert path.is_absolute() and path.is_relative_to(images_dir)
        assert re.fullmatch(rf"jobs/{job_id}/{record.idx}-[0-9a-f]{{8}}\.png", record.path)
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == record.sha256 and record.sha256.startswith(record.path[-12:-4])
        assert len(data) == record.size_bytes and data == result.png()
        assert read_parameters(data) == result.parameters
        with Image.open(path) as image:
            assert image.getpixel((0, 0)) == result.image.getpixel((0, 0))
    assert _leftover_temps(images_dir) == []
    job = await store.get_job(job_id)
    assert job.status is JobStatus.DONE and job.finished_at is not None


async def test_finish_twice_returns_the_first_result(store: Store, images_dir: Path) -> None:
    job_id = await _running_job(store, count=1)
    first = await store.finish_job(job_id, [generated(color=(1, 2, 3))])
    again = await store.finish_job(job_id, [generated(color=(9, 9, 9))])
    assert again == first
    assert len(list((images_dir / "jobs" / str(job_id)).iterdir())) == 1


async def test_concurrent_finishes_record_one_result(store: Store, images_dir: Path) -> None:
    job_id = await _running_job(store, count=1)
    outcomes = await asyncio.gather(
        store.finish_job(job_id, [generated(color=(1, 1, 1))]),
        store.finish_job(job_id, [generated(color=(2, 2, 2))]),
    )
    assert outcomes[0] == outcomes[1] and len(outcomes[0]) == 1
    files = list((images_dir / "jobs" / str(job_id)).iterdir())
    assert [store.image_path(outcomes[0][0])] == files  # the loser's file was cleaned up


async def test_nsfw_flags_are_kept(store: Store) -> None:
    job_id = await _running_job(store)
    records = await store.finish_job(job_id, [replace(generated(0), nsfw=True), replace(generated(1), nsfw=False)])
    assert [r.nsfw for r in records] == [True, False]


async def test_finish_unknown_job(store: Store) -> None:
    with pytest.raises(UnknownJob):
        await store.finish_job(12345, [generated()])


@dataclass(frozen=True)
class _Unencodable(GeneratedImage):
    def png(self) -> bytes:
        raise RuntimeError("encoder broke")


async def test_failed_encode_writes_nothing(store: Store, images_dir: Path) -> None:
    job_id = await _running_job(store)
    broken = _Unencodable(image=Image.new("RGB", (64, 64)), seed=2, index=1, parameters="x")
    with pytest.raises(RuntimeError):
        await store.finish_job(job_id, [generated(0), broken])
    assert (await store.get_job(job_id)).status is JobStatus.RUNNING
    assert list(images_dir.rglob("*.png")) == [] and _leftover_temps(images_dir) == []


def test_failed_rename_leaves_no_temp_file(tmp_path: Path) -> None:
    files = ImageFiles(tmp_path)
    (tmp_path / "jobs" / "1" / "0-deadbeef.png").mkdir(parents=True)  # a directory where the file goes
    with pytest.raises(OSError):
        files._write_atomic("jobs/1/0-deadbeef.png", b"png bytes")
    assert _leftover_temps(tmp_path) == []


async def test_delete_job_images(store: Store) -> None:
    job_id = await _running_job(store)
    records = await store.finish_job(job_id, [generated(0), generated(1, color=(5, 5, 5))])
    paths = [store.image_path(r) for r in records]
    assert await store.delete_job_images(job_id) == 2
    assert not any(path.exists() for path in paths)
    assert await store.images_for_job(job_id) == []
    assert await store.delete_job_images(job_id) == 0  # a second press is harmless
    assert (await store.get_job(job_id)).status is JobStatus.DONE
