"""A result is delivered once, even when two deliverers race, and is found again after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage import Store
from tests.storage.factories import generated, txt2img


async def _finished_job(store: Store) -> int:
    job = await store.create_job(txt2img(), user_id=1, guild_id=2, channel_id=3)
    await store.mark_running([job.id])
    await store.finish_job(job.id, [generated()])
    return job.id


async def test_mark_delivered_only_once(store: Store) -> None:
    job_id = await _finished_job(store)
    assert await store.undelivered_jobs() == [await store.get_job(job_id)]
    assert await store.mark_delivered(job_id, "message:111")
    assert not await store.mark_delivered(job_id, "channel:222")
    job = await store.get_job(job_id)
    assert job.delivered_where == "message:111" and job.delivered_at is not None
    assert await store.undelivered_jobs() == []


async def test_racing_deliverers_on_one_store(store: Store) -> None:
    job_id = await _finished_job(store)
    claims = await asyncio.gather(*(store.mark_delivered(job_id, f"message:{n}") for n in range(10)))
    assert sorted(claims) == [False] * 9 + [True]


async def test_racing_deliverers_on_two_connections(store: Store, db_path: Path, images_dir: Path) -> None:
    job_ids = [await _finished_job(store) for _ in range(20)]
    async with await Store.open(db_path, images_dir) as other:
        claims = await asyncio.gather(
            *(s.mark_delivered(job_id, f"by:{n}") for job_id in job_ids for n, s in enumerate((store, other)))
        )
    for pair in zip(claims[::2], claims[1::2], strict=True):
        assert sorted(pair) == [False, True]
    assert await store.undelivered_jobs() == []


async def test_failed_and_cancelled_jobs(store: Store) -> None:
    failed = await store.create_job(txt2img("fails"), user_id=1, guild_id=2, channel_id=3)
    cancelled = await store.create_job(txt2img("cancelled"), user_id=1, guild_id=2, channel_id=3)
    await store.fail_job(failed.id, "The model could not be loaded.")
    await store.cancel_job(cancelled.id)
    # The requester still needs the failure; a cancel was answered when it happened.
    assert [job.id for job in await store.undelivered_jobs()] == [failed.id]


async def test_everything_survives_reopen(db_path: Path, images_dir: Path) -> None:
    async with await Store.open(db_path, images_dir) as store:
        job_id = await _finished_job(store)
        images = await store.images_for_job(job_id)
        job = await store.get_job(job_id)
    async with await Store.open(db_path, images_dir) as store:
        assert await store.get_job(job_id) == job
        assert await store.images_for_job(job_id) == images
        assert store.image_path(images[0]).read_bytes() == generated().png()
        assert [j.id for j in await store.undelivered_jobs()] == [job_id]
