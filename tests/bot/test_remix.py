"""Remix end to end: replies to pictures and Apps › Remix, through the fake Discord and the tiny model."""

from __future__ import annotations

from collections.abc import Callable

from tests.bot.conftest import button, decode, delivered_job, has_image, mask_png, png
from tests.fake_discord import FakeDiscord

EPHEMERAL = 64
MiB = 1024 * 1024


def answer_to(fake: FakeDiscord, message: dict) -> Callable[[dict], bool]:
    """Matches the bot's replies to `message`."""

    def match(candidate: dict) -> bool:
        reference = candidate.get("message_reference") or {}
        return candidate["author"]["id"] == str(fake.bot_user.id) and reference.get("message_id") == message["id"]

    return match


def job_id_of(message: dict) -> int:
    return int(button(message, "imagine:reroll").split(":")[2])


async def test_reply_remixes_a_picture_and_our_reply_becomes_the_result(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        upload = await fake.post_user_message("my holiday", attachments=[("beach.png", png((96, 64)), "image/png")])
        reply = await fake.post_user_message(
            "make it winter --strength 0.4 --seed 9 --no snow", reply_to=int(upload["id"]), user=fake.other_member
        )
        masked = await fake.post_user_message(
            "a door", reply_to=int(upload["id"]), attachments=[("mask.png", mask_png((96, 64)), "image/png")]
        )
        queued = await fake.wait_for_message(answer_to(fake, reply))
        assert "**make it winter**" in queued["content"] and "Queued" in queued["content"]
        assert queued["mentions"] == []  # answered without a ping

        final = await fake.wait_for_message(lambda m: m["id"] == queued["id"] and has_image(m), timeout=60)
        assert "img2img (strength 0.4)" in final["content"] and "seed 9" in final["content"]
        image = decode(fake, final["attachments"][0])
        assert image.width > image.height  # follows the picture's shape, not the model's square default
        job = await delivered_job(running, job_id_of(final))
        assert (job.mode.value, job.params["strength"], job.params["seed"]) == ("img2img", 0.4, 9)
        assert job.prompt == "make it winter" and job.negative_prompt == "snow"
        assert (job.user_id, job.guild_id, job.channel_id) == (fake.other_member.id, fake.guild.id, fake.channel.id)
        assert job.origin["kind"] == "message" and job.origin["message_id"] == int(queued["id"])
        assert job.origin["reply_to"] == int(reply["id"]) and job.origin["upload_limit"] >= 10 * MiB
        assert job.delivered_where == f"edit:{queued['id']}" and job.source_job_id is None

        inpainted = await fake.wait_for_message(lambda m: answer_to(fake, masked)(m) and has_image(m), timeout=60)
        assert "inpaint" in inpainted["content"]
        assert (await running.store.get_job(job_id_of(inpainted))).mode.value == "inpaint"

        again = await fake.post_user_message("now in spring", reply_to=int(final["id"]))
        spring = await fake.wait_for_message(lambda m: answer_to(fake, again)(m) and has_image(m), timeout=60)
        remix = await running.store.get_job(job_id_of(spring))
        assert remix.source_job_id == job.id and remix.user_id == fake.member.id
        assert remix.params["strength"] == 0.6 and "img2img" in spring["content"]


async def test_embed_pictures_and_the_context_menu(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        upload = await fake.post_user_message(attachments=[("cat.png", png((64, 96)), "image/png")])
        attachment = upload["attachments"][0]
        embedded = await fake.post_user_message(
            "look", embeds=[{"type": "rich", "image": {"url": attachment["url"], "proxy_url": attachment["proxy_url"]}}]
        )
        reply = await fake.post_user_message("in the rain", reply_to=int(embedded["id"]), user=fake.other_member)

        menu = await fake.send_message_command("Remix", int(upload["id"]), user=fake.other_member)
        modal = await menu.wait_for_modal()
        assert modal["title"] == "Remix"
        submit = await fake.send_modal_submit(
            modal["custom_id"], {"remix:prompt": "as a watercolour --seed 5", "remix:strength": "0.5"}
        )
        assert (await submit.wait_for_callback())["type"] == 5  # deferred while the picture downloads
        final = await submit.wait_for_original(has_image, timeout=60)
        assert "img2img (strength 0.5)" in final["content"] and "seed 5" in final["content"]
        job = await running.store.get_job(job_id_of(final))
        assert job.user_id == fake.other_member.id and job.origin["kind"] == "interaction"
        assert job.prompt == "as a watercolour" and job.params["height"] > job.params["width"]

        rainy = await fake.wait_for_message(lambda m: answer_to(fake, reply)(m) and has_image(m), timeout=60)
        assert "img2img" in rainy["content"]

        words = await fake.post_user_message("no pictures here")
        refused = await fake.send_message_command("Remix", int(words["id"]))
        callback = await refused.wait_for_callback()
        assert callback["type"] == 4 and callback["data"]["flags"] & EPHEMERAL
        assert "no picture to remix" in callback["data"]["content"]


async def test_replies_that_are_not_remixes_are_ignored_and_mistakes_answered(start_bot) -> None:
    async with start_bot(max_steps=10) as running:
        fake = running.fake
        upload = await fake.post_user_message("sunset", attachments=[("sun.png", png(), "image/png")])
        words = await fake.post_user_message("just words")
        ignored = [
            await fake.post_user_message(reply_to=int(upload["id"]), attachments=[("m.png", mask_png(), "image/png")]),
            await fake.post_user_message("nice", reply_to=int(words["id"]), user=fake.other_member),
            await fake.post_user_message(f"<@{fake.bot_user.id}>", reply_to=int(upload["id"])),
        ]
        bad_flag = await fake.post_user_message("winter --stylize 100", reply_to=int(upload["id"]))
        too_many = await fake.post_user_message("winter --steps 20", reply_to=int(upload["id"]))

        error = await fake.wait_for_message(answer_to(fake, bad_flag))
        assert error["content"].startswith("⚠️ Unknown flag `--stylize`")
        limit = await fake.wait_for_message(answer_to(fake, too_many))
        assert "20 steps is over this server's limit of 10" in limit["content"]
        sent = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/messages") and r.json]
        assert sent and all(
            r.json["allowed_mentions"]["parse"] == [] and r.json["allowed_mentions"]["replied_user"] for r in sent
        )

        answered = {(m.get("message_reference") or {}).get("message_id") for m in fake.messages()}
        assert not answered & {m["id"] for m in ignored}
        assert await running.store.recent_jobs() == []
