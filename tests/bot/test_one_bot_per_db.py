"""The composition root takes the database's lock before it restores the queue: a second bot in the same
process (or any other) is refused with one line naming the holder, and the first one is untouched."""

from __future__ import annotations

import os
import socket

import pytest

from bot.runner import StartupError, bot_parts
from storage.records import JobStatus
from tests.bot.conftest import button, delivered_job, has_image, make_config


async def test_a_second_bot_on_the_same_database_is_refused_before_it_restores_anything(
    start_bot, fake_discord, tiny_sd_dir, tmp_path, bot_engine
) -> None:
    data = tmp_path / "data"
    async with start_bot(data=data) as running:
        fake = running.fake
        await running.worker.stop()  # the first bot's job stays queued: a second bot's restore would take it
        handle = await fake.send_slash_command("imagine", {"prompt": "only mine", "seed": 2})
        job_id = int(button((await handle.wait_for_callback())["data"], "imagine:cancel").split(":")[2])
        with pytest.raises(StartupError) as refused:
            async with bot_parts(make_config(fake, tiny_sd_dir, data), bot_engine):
                pytest.fail("a second bot started on the same database")
        message = str(refused.value)
        host = socket.gethostname()
        assert message.startswith(f"another imagine-bot (`imagine-bot run`, pid {os.getpid()} on {host}")
        assert f"is running on the database {data / 'imagine.sqlite3'} ([storage] path); stop it first" in message
        job = await running.store.get_job(job_id)
        assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)
    async with start_bot(data=data) as running:  # the lock went with the first bot
        await handle.wait_for_original(has_image, timeout=60)
        assert (await delivered_job(running, job_id)).attempts == 1
