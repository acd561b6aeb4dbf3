"""NSFW policy with a safety checker whose verdicts the test forces: block, spoiler, age-restricted."""

from __future__ import annotations

from PIL import Image

from jobs.events import JobProgress
from tests.bot.conftest import button, decode, has_image
from tests.bot.moderation.test_admin import admin, text_of


async def imagine(running, channel_id: int | None = None, **options) -> tuple[dict, object]:
    fake = running.fake
    handle = await fake.send_slash_command("imagine", {"prompt": "a lighthouse"} | options, channel_id=channel_id)
    final = await handle.wait_for_original(
        lambda m: has_image(m) or "🚫" in m["content"] or "⚠️" in m["content"], timeout=60
    )
    job_id = int(button(final, "imagine:info").split(":")[2])
    return final, handle, job_id


def previews_sent(fake, token: str) -> int:
    return sum(
        1 for r in fake.requests if r.method == "PATCH" and token in r.path for f in r.files if "preview" in f.filename
    )


async def test_flagged_images_follow_the_servers_policy(
    fake_discord, start_custom_bot, checked_engine, forced_flags
) -> None:
    forced_flags.flags = [True]
    fake_discord.guild.channel("art").nsfw = True  # age-restricted
    async with start_custom_bot(engine=checked_engine) as running:
        fake, store, guild = running.fake, running.store, running.fake.guild.id
        shown = text_of(await admin(fake, "imagine-admin show"))
        assert "Model `tiny`: a safety checker flags NSFW images" in shown and "No safety checker" not in shown

        # block (the default): nothing posted, the reason said.
        final, _, job_id = await imagine(running)
        assert not has_image(final) and final["attachments"] == []
        assert (
            "🚫 The image was flagged as NSFW and blocked by this server's policy (`nsfw`: block)" in final["content"]
        )
        assert [r.nsfw for r in await store.images_for_job(job_id)] == [True]
        assert (await store.get_job(job_id)).origin["previews"] is False

        # spoiler: posted behind Discord's spoiler file name.
        await admin(fake, "imagine-admin set", {"setting": "nsfw", "value": "spoiler"})
        final, _, _ = await imagine(running)
        (attachment,) = final["attachments"]
        assert attachment["filename"].startswith("SPOILER_imagine-") and "behind a spoiler" in final["content"]

        # age-restricted: blocked in #general, shown as it is in an age-restricted channel (previews too).
        await store.set_guild_setting(guild, "nsfw", "age-restricted", by_user=fake.owner.id)
        final, _, _ = await imagine(running)
        assert final["attachments"] == [] and "blocked" in final["content"]
        assert "outside age-restricted channels" in final["content"]
        final, _, job_id = await imagine(running, channel_id=fake.guild.channel("art").id)
        (attachment,) = final["attachments"]
        assert attachment["filename"].startswith("imagine-") and "blocked" not in final["content"]
        origin = (await store.get_job(job_id)).origin
        assert origin["channel_nsfw"] is True and origin["previews"] is True


async def test_a_grid_keeps_its_safe_images(start_custom_bot, checked_engine, forced_flags) -> None:
    forced_flags.flags = [True, False]
    async with start_custom_bot(engine=checked_engine) as running:
        final, _, job_id = await imagine(running, count=2)
        assert "1 of 2 images were flagged as NSFW and blocked" in final["content"]
        grid = decode(running.fake, final["attachments"][0])
        assert grid.size == (128, 64)
        assert grid.getpixel((10, 10)) == (32, 32, 32)  # the flagged one: a blank tile
        assert [r.nsfw for r in await running.store.images_for_job(job_id)] == [True, False]

        forced_flags.flags = [False]
        final, _, job_id = await imagine(running)
        assert final["attachments"][0]["filename"].startswith("imagine-") and "NSFW" not in final["content"]
        assert [r.nsfw for r in await running.store.images_for_job(job_id)] == [False]


async def test_live_previews_only_where_a_flagged_image_could_be_shown(
    fake_discord, start_custom_bot, checked_engine
) -> None:
    """Previews come before the checker runs: with a checker, they are withheld unless flagged images may show."""
    fake_discord.guild.channel("art").nsfw = True
    async with start_custom_bot(engine=checked_engine) as running:
        fake = running.fake
        await running.worker.stop()  # the test plays the worker's progress events itself
        await running.store.set_guild_setting(fake.guild.id, "nsfw", "age-restricted", by_user=fake.owner.id)
        sent = {}
        for channel in ("general", "art"):
            handle = await fake.send_slash_command(
                "imagine", {"prompt": "x"}, channel_id=fake.guild.channel(channel).id
            )
            job_id = int(button((await handle.wait_for_callback())["data"], "imagine:cancel").split(":")[2])
            preview = (Image.new("RGB", (64, 64), (200, 0, 0)),)
            running.bot.services.queue.bus.publish(JobProgress(job_id, step=2, total=4, previews=preview))
            await fake.wait_for_request(
                lambda r: r.method == "PATCH" and handle.token in r.path and "🎨" in (r.json or {}).get("content", "")  # noqa: B023
            )
            sent[channel] = previews_sent(fake, handle.token)
        assert sent == {"general": 0, "art": 1}
