"""A job's life: creation, reload after restart, status transitions, interrupted runs."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from pathlib import Path

from PIL import ImageChops

from generation.request import Mode
from storage import JobStatus, Store
from storage.records import JobRecord
from tests.storage.factories import FakeClock, circle_mask, generated, gradient, inpaint, txt2img


async def _job(store: Store, prompt: str, user_id: int = 1) -> JobRecord:
    return await store.create_job(txt2img(prompt), user_id=user_id, guild_id=2, channel_id=3)


async def test_create_and_get_round_trip(store: Store, clock: FakeClock) -> None:
    request = txt2img(negative_prompt="blurry", count=2, sampler="euler", seed=7)
    origin = {"token": "abc", "application_id": "99", "message_id": 5}
    job = await store.create_job(
        request, user_id=10, guild_id=20, channel_id=30, origin=origin, weight=2.5, source_job_id=None
    )
    assert job.status is JobStatus.QUEUED
    assert (job.user_id, job.guild_id, job.channel_id) == (10, 20, 30)
    assert (job.prompt, job.negative_prompt, job.model, job.mode) == (
        request.prompt,
        "blurry",
        "tiny-sd",
        Mode.TXT2IMG,
    )
    assert job.origin == origin and job.weight == 2.5 and job.attempts == 0 and job.count == 2
    assert job.created_at == clock.now and job.started_at is None and job.delivered_at is None
    assert await store.get_job(job.id) == job
    assert await store.load_request(job) == request
    assert await store.get_job(job.id + 1000) is None


async def test_input_images_survive_byte_for_byte(store: Store) -> None:
    request = inpaint()
    job = await store.create_job(request, user_id=1, guild_id=None, channel_id=None)
    assert job.init_path and job.mask_path
    rebuilt = await store.load_request(job)
    assert rebuilt == request and rebuilt.mode is Mode.INPAINT
    assert rebuilt.init_image is not None and rebuilt.mask is not None
    assert rebuilt.init_image.mode == "RGB" and rebuilt.mask.mode == "L"
    assert ImageChops.difference(rebuilt.init_image, gradient()).getbbox() is None
    assert ImageChops.difference(rebuilt.mask, circle_mask()).getbbox() is None


async def test_identical_inputs_share_one_file(store: Store, images_dir: Path) -> None:
    first = await store.create_job(inpaint(), user_id=1, guild_id=None, channel_id=None)
    second = await store.create_job(inpaint("another"), user_id=2, guild_id=None, channel_id=None)
    assert (first.init_path, first.mask_path) == (second.init_path, second.mask_path)
    assert len(list((images_dir / "inputs").rglob("*.png"))) == 2


async def test_remix_keeps_its_source(store: Store) -> None:
    source = await store.create_job(txt2img(), user_id=1, guild_id=2, channel_id=3)
    remix = await store.create_job(
        txt2img("variation"), user_id=4, guild_id=2, channel_id=3, source_job_id=source.id, source_index=1
    )
    assert (remix.source_job_id, remix.source_index) == (source.id, 1)


async def test_created_job_is_visible_to_another_connection(store: Store, db_path: Path, images_dir: Path) -> None:
    job = await store.create_job(inpaint(), user_id=1, guild_id=2, channel_id=3)
    async with await Store.open(db_path, images_dir) as other:
        assert await other.get_job(job.id) == job
        assert await other.load_request(job) == await store.load_request(job)


async def test_status_transitions(store: Store, clock: FakeClock) -> None:
    a, b, c = [await _job(store, f"job {n}") for n in "abc"]
    assert await store.cancel_job(c.id)
    clock.advance(seconds=5)
    assert await store.mark_running([a.id, b.id, c.id]) == [a.id, b.id]
    running = await store.get_job(a.id)
    assert running.status is JobStatus.RUNNING and running.attempts == 1 and running.started_at == clock.now

    assert await store.fail_job(b.id, "The GPU ran out of memory.")
    failed = await store.get_job(b.id)
    assert failed.status is JobStatus.FAILED and failed.error == "The GPU ran out of memory."
    assert failed.finished_at == clock.now

    assert not await store.cancel_job(b.id)  # finished jobs stay as they are
    assert not await store.fail_job(c.id, "late")
    assert (await store.get_job(c.id)).status is JobStatus.CANCELLED

    await store.finish_job(a.id, [generated()])
    assert not await store.cancel_job(a.id)
    assert (await store.get_job(a.id)).status is JobStatus.DONE


async def test_cancel_a_running_job(store: Store) -> None:
    job = await store.create_job(txt2img(), user_id=1, guild_id=2, channel_id=3)
    await store.mark_running([job.id])
    assert await store.cancel_job(job.id)
    assert not await store.cancel_job(job.id)
    # The GPU finishing anyway must not resurrect the job.
    assert await store.finish_job(job.id, [generated()]) == []
    assert (await store.get_job(job.id)).status is JobStatus.CANCELLED


async def test_queued_jobs_in_creation_order_and_pending_counts(store: Store) -> None:
    jobs = [await _job(store, f"job {n}", user_id=n % 2) for n in range(5)]
    await store.mark_running([jobs[1].id])
    await store.cancel_job(jobs[2].id)
    assert [job.id for job in await store.queued_jobs()] == [jobs[0].id, jobs[3].id, jobs[4].id]
    assert await store.count_pending(0) == 2  # jobs 0 and 4; 2 was cancelled
    assert await store.count_pending(1) == 2  # job 1 running, job 3 queued
    assert await store.count_pending(99) == 0


async def test_requeue_interrupted_caps_attempts(store: Store, db_path: Path, images_dir: Path) -> None:
    job = await store.create_job(txt2img(), user_id=1, guild_id=2, channel_id=3)
    other = await store.create_job(txt2img("still queued"), user_id=1, guild_id=2, channel_id=3)
    for attempt in range(1, 4):
        assert await store.mark_running([job.id]) == [job.id]
        await store.close()  # the process dies mid-generation
        store = await Store.open(db_path, images_dir)
        requeued, failed = await store.requeue_interrupted(max_attempts=3)
        if attempt < 3:
            assert ([j.id for j in requeued], failed) == ([job.id], [])
            assert requeued[0].status is JobStatus.QUEUED and requeued[0].attempts == attempt
        else:
            assert requeued == [] and [j.id for j in failed] == [job.id]
            assert failed[0].status is JobStatus.FAILED
            assert failed[0].error == "Generation was interrupted 3 times; giving up."
    assert [j.id for j in await store.queued_jobs()] == [other.id]
    assert [j.id for j in await store.undelivered_jobs()] == [job.id]  # the user still hears about it
    await store.close()


async def test_requeue_message_for_a_single_attempt(store: Store) -> None:
    job = await store.create_job(txt2img(), user_id=1, guild_id=2, channel_id=3)
    await store.mark_running([job.id])
    _, failed = await store.requeue_interrupted(max_attempts=1)
    assert failed[0].error == "Generation was interrupted once; giving up."


async def test_cancelled_callers_leave_the_store_usable(store: Store) -> None:
    # Cancel at many different await points: no transaction may be left open or half-written.
    for steps in range(40):
        task = asyncio.create_task(store.create_job(inpaint(), user_id=1, guild_id=2, channel_id=3))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    job = await _job(store, "after the storm")
    assert await store.get_job(job.id) == job
    jobs = await store.recent_jobs(limit=100)
    assert (await store.usage(1, 2)).jobs == len(jobs)  # usage and jobs committed together or not at all


async def test_last_job_at_per_user_and_guild(store: Store, clock: FakeClock) -> None:
    assert await store.last_job_at(1, 10) is None
    await store.create_job(txt2img(), user_id=1, guild_id=10, channel_id=5)
    first = clock.now
    clock.advance(minutes=1)
    await store.create_job(txt2img(), user_id=1, guild_id=None, channel_id=None)
    await store.create_job(txt2img(), user_id=2, guild_id=10, channel_id=5)
    assert await store.last_job_at(1, 10) == first  # not the DM job, not the other user's
    assert await store.last_job_at(1, None) == clock.now
    assert store.now() == clock.now
