"""Delivery: live progress, the 15-minute token limit, and restarts between queueing and delivery."""

from __future__ import annotations

import time

from storage.records import JobStatus
from tests.bot.conftest import button, delivered_job, has_image, slow_steps


def progress_edits(fake, token: str) -> list:
    return [
        r
        for r in fake.requests
        if r.method == "PATCH" and token in r.path and r.json and "`[" in (r.json.get("content") or "")
    ]


async def test_progress_is_shown_with_previews_and_edits_are_spaced(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        started = time.monotonic()
        with slow_steps(running.worker.engine, 0.05):  # ~3 s of sampling: long enough to show progress
            handle = await fake.send_slash_command("imagine", {"prompt": "slow sunrise", "steps": 60, "count": 2})
            await handle.wait_for_original(has_image, timeout=120)
        elapsed = time.monotonic() - started
        edits = progress_edits(fake, handle.token)
        assert edits, "no progress was shown"
        assert "`[" in edits[-1].json["content"] and "step" in edits[-1].json["content"]
        assert any(f.filename == "preview.png" for e in edits for f in e.files)
        assert len(edits) <= elapsed / 1.5 + 2  # at most one edit per 1.5 s per message


async def test_after_the_token_expires_the_result_is_posted_mentioning_the_requester(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        fake.interaction_token_ttl = 1.0  # Discord: 15 minutes; the fake makes it short
        with slow_steps(running.worker.engine, 0.05):  # the job outlives the token
            handle = await fake.send_slash_command("imagine", {"prompt": "late delivery", "steps": 40})
            await handle.wait_for_callback()
            message = await fake.wait_for_message(
                lambda m: has_image(m) and m.get("webhook_id") is None and "late delivery" in m["content"], timeout=120
            )
        assert f"<@{fake.member.id}>" in message["content"]
        sent = [r for r in fake.requests if r.method == "POST" and r.path == f"/channels/{fake.channel.id}/messages"]
        mentions = sent[-1].json["allowed_mentions"]
        assert mentions["parse"] == [] and [str(u) for u in mentions["users"]] == [str(fake.member.id)]
        job_id = int(button(message, "imagine:info").split(":")[2])
        job = await delivered_job(running, job_id)
        assert job.delivered_where == f"channel:{message['id']}"


async def test_bot_stopped_between_queueing_and_delivery_delivers_once_after_restart(start_bot, tmp_path) -> None:
    async with start_bot(data=tmp_path / "data") as running:
        fake = running.fake
        await running.worker.stop()  # the GPU is busy elsewhere: the job stays queued
        handle = await fake.send_slash_command("imagine", {"prompt": "survives restarts", "seed": 3})
        queued = (await handle.wait_for_callback())["data"]
        job_id = int(button(queued, "imagine:cancel").split(":")[2])
    async with start_bot(data=tmp_path / "data") as running:
        final = await handle.wait_for_original(has_image, timeout=60)
        job = await delivered_job(running, job_id)
        assert job.status is JobStatus.DONE
        assert "survives restarts" in final["content"]
        # Buttons on the old message work with the new process.
        click = await fake.send_button_click(int(final["id"]), button(final, "imagine:info"))
        assert "Seed: 3" in (await click.wait_for_callback())["data"]["content"]
    async with start_bot(data=tmp_path / "data"):
        pass  # a third start finds nothing undelivered
    result_edits = [r for r in fake.requests if r.method == "PATCH" and handle.token in r.path and r.files]
    assert len([r for r in result_edits if any(f.filename.startswith("imagine-") for f in r.files)]) == 1
