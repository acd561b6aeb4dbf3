"""A Discord REST outage while one real `imagine-bot run` process finishes a job: every request answered 503 (the
gateway up), then recovery. The result is retried while the process runs and posted once, without a restart.

The result goes to the channel (its progress message was deleted): discord.py raises a 503 on a channel post at
once, while it retries a webhook edit for 25 s itself, which would make this test take minutes in real time.
tests/bot/test_delivery_retry.py covers the webhook edit on a scaled clock.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.bot.conftest import has_image
from tests.fake_discord import FakeDiscord
from tests.reliability.process import BotProcess, poll, query, result_files, result_messages, write_config
from tests.reliability.table import check


async def test_a_result_finished_during_a_rest_outage_is_posted_once_it_ends(
    fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path
) -> None:
    fake = fake_discord
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"seconds_per_step": 0.25}))
    config = write_config(tmp_path, fake, tiny_sd_dir)
    text = config.read_text().replace(
        "[discord]\n", "[discord]\ndelivery_retry_first = 0.2\ndelivery_retry_max = 1.0\n"
    )
    config.write_text(text)
    bot = BotProcess(
        config, fake, tmp_path / "bot.log", module="tests.reliability.launch", env={"IMAGINE_GPU_FAULTS": str(faults)}
    )
    await bot.start()
    try:
        handle = await fake.send_slash_command("imagine", {"prompt": "through the outage", "steps": 16})
        await handle.wait_for_callback(timeout=15)
        await fake.delete_message(fake.store.get(handle.original_message_id))  # the result must be posted anew
        # Once a progress edit met the 404 the bot posts the result rather than edit it (no webhook retries).
        await fake.wait_for_request(lambda r: handle.token in r.path and r.status == 404, timeout=60)
        await poll(lambda: query(bot.db, "SELECT id FROM jobs WHERE status = 'running'"), timeout=60, what="running")
        fake.start_outage()
        posts = f"/channels/{fake.channel.id}/messages"

        def refused() -> list:
            return [r for r in fake.requests if r.path == posts and r.status == 503 and result_files(r)]

        await fake.wait_until(lambda: len(refused()) >= 3 or None, timeout=60, what="three refused posts")
        fake.end_outage()
        final = await fake.wait_for_message(lambda m: has_image(m) and "through the outage" in m["content"], 60)
        (job,) = await poll(
            lambda: query(bot.db, "SELECT * FROM jobs WHERE delivered_at IS NOT NULL"), timeout=30, what="recorded"
        )
        tries = len(refused())
        alive = bot.alive
    finally:
        exit_status = await bot.stop()
    shown = result_messages(fake).get(job["id"], [])
    identifies = [e for e in fake.gateway.log if e.kind == "identify"]
    log = bot.output()
    check(
        "REST",
        "every REST request answered 503 while a job finishes (the gateway up), then recovery",
        "the result is tried again with back-off while the process runs, and posted once; no restart",
        f"{tries} posts refused, then 1 posted; {len(shown)} result message(s); delivered_where "
        f"{job['delivered_where']}; process alive {alive}, {len(identifies)} IDENTIFY, exit status {exit_status}",
        tries >= 3
        and len(shown) == 1
        and job["delivered_where"] == f"channel:{final['id']}"
        and alive
        and len(identifies) == 1
        and "try 2 in" in log
        and exit_status == 0,
    )
