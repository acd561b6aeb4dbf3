"""A full disk through the real discord.py client and the loopback Discord: the job's message says the bot's
storage is full and the job will continue, /imagine-admin show says the GPU waits, and once space is freed
the result is delivered, once."""

from __future__ import annotations

import pytest

from storage.records import JobStatus
from tests.bot.conftest import button, delivered_job, has_image, png
from tests.reliability.process import result_files
from tests.support.full_disk import full_disk

EPHEMERAL = 64


async def admin_show(fake) -> str:  # type: ignore[no-untyped-def]
    handle = await fake.send_slash_command("imagine-admin show", {}, user=fake.moderator)
    data = (await handle.wait_for_callback())["data"]
    assert data["flags"] & EPHEMERAL
    return data["embeds"][0]["description"]


async def test_the_job_waits_saying_storage_is_full_and_is_delivered_once_space_is_freed(
    start_bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_bot() as running:
        fake = running.fake
        running.worker.space_backoff = (0.05,)  # check for room often: the test frees it in a moment
        assert (await admin_show(fake)).startswith("**GPU**: idle")
        with full_disk(monkeypatch) as disk:
            handle = await fake.send_slash_command("imagine", {"prompt": "a lighthouse at dusk", "seed": 11})
            queued = (await handle.wait_for_callback())["data"]
            job_id = int(button(queued, "imagine:cancel").split(":")[2])
            waiting = await handle.wait_for_original(lambda m: "storage is full" in m["content"], timeout=60)
            assert "The bot's storage is full, so your images could not be saved yet" in waiting["content"]
            assert "Your job is kept and will continue once its operator frees some space" in waiting["content"]
            assert "a lighthouse at dusk" in waiting["content"]
            assert not has_image(waiting)
            button(waiting, "imagine:cancel")  # it can still be cancelled
            job = await running.store.get_job(job_id)
            assert (job.status, job.attempts, job.error) == (JobStatus.QUEUED, 0, None)
            # A new job needing a file of its own (its start picture) cannot be stored: refused, plainly.
            remix = await fake.send_slash_command(
                "imagine", {"prompt": "needs room"}, attachments={"image": ("in.png", png(), "image/png")}
            )
            refused = await remix.wait_for_message(lambda m: "⚠️" in m["content"])
            assert "The bot's storage is full, so it cannot take new jobs right now" in refused["content"]
            assert refused["flags"] & EPHEMERAL and remix.original is None
            assert [j.id for j in await running.store.recent_jobs(limit=10)] == [job_id]  # nothing half-stored
            shown = await admin_show(fake)
            assert shown.startswith("**GPU**: paused: storage full")
            assert "The bot's storage is full: finished images cannot be saved, so jobs wait" in shown
            disk.free()
            final = await handle.wait_for_original(has_image, timeout=60)
        job = await delivered_job(running, job_id)
        assert (job.status, job.attempts) == (JobStatus.DONE, 1)
        assert "a lighthouse at dusk" in final["content"] and "seed 11" in final["content"]
        assert "storage is full" not in final["content"]
        assert (await admin_show(fake)).startswith("**GPU**: idle")
    uploads = [job for request in fake.requests for job in result_files(request)]
    assert uploads == [job_id]  # delivered once
    assert sum(1 for path in disk.refused if "jobs" in path.parts) == 1  # one result could not be written
