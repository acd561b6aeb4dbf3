"""Direct messages on and off (a bot-wide setting), and a server's default model."""

from __future__ import annotations

from tests.bot.conftest import png
from tests.bot.moderation.entry_points import EPHEMERAL, replies_to
from tests.bot.moderation.test_admin import admin


async def test_direct_messages_on_and_off(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        await running.bot.tree.sync()  # global commands too: only those reach direct messages
        await running.worker.stop()
        dm = fake.dm_channel(fake.member)
        picture = await fake.post_user_message("mine", channel_id=dm.id, attachments=[("p.png", png(), "image/png")])

        async def imagine_in_dm() -> dict:
            handle = await fake.send_slash_command("imagine", {"prompt": "a cat"}, channel_id=dm.id)
            return (await handle.wait_for_callback())["data"]

        async def remix_in_dm() -> dict:
            sent = await fake.post_user_message("as a painting", channel_id=dm.id, reply_to=int(picture["id"]))
            return await fake.wait_for_message(lambda m: replies_to(fake, m, sent), channel_id=dm.id, timeout=15)

        assert "Queued" in (await imagine_in_dm())["content"]
        assert "Queued" in (await remix_in_dm())["content"]
        jobs = await running.store.jobs_by_user(fake.member.id, dms_only=True)
        assert len(jobs) == 2 and all(j.guild_id is None for j in jobs)

        await admin(fake, "imagine-admin set", {"setting": "dms", "value": "off"}, user=fake.owner)
        refused = await imagine_in_dm()
        assert refused["flags"] & EPHEMERAL
        assert "does not make images in direct messages (setting `dms`: off)" in refused["content"]
        assert "does not make images in direct messages" in (await remix_in_dm())["content"]
        handle = await fake.send_slash_command("imagine", {"prompt": "a cat"})  # servers are not affected
        assert "Queued" in (await handle.wait_for_callback())["data"]["content"]

        await admin(fake, "imagine-admin reset", {"setting": "dms"}, user=fake.owner)
        assert "Queued" in (await imagine_in_dm())["content"]


async def test_a_servers_default_model(start_custom_bot) -> None:
    async with start_custom_bot(extra_models=("tiny-b",)) as running:
        fake = running.fake
        await running.worker.stop()
        await admin(fake, "imagine-admin set", {"setting": "default_model", "value": "tiny-b"})
        bad = await admin(fake, "imagine-admin set", {"setting": "default_model", "value": "sdxl"})
        assert "must be one of the models: tiny, tiny-b" in bad["content"]
        for options in ({"prompt": "default"}, {"prompt": "picked", "model": "tiny"}):
            handle = await fake.send_slash_command("imagine", options)
            assert "Queued" in (await handle.wait_for_callback())["data"]["content"]
        jobs = await running.store.jobs_by_user(fake.member.id)
        assert {j.prompt: j.model for j in jobs} == {"default": "tiny-b", "picked": "tiny"}
