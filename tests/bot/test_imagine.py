"""/imagine end to end: the real discord.py client, the fake Discord, the tiny model, a real store."""

from __future__ import annotations

import re

from sd_parsers import ParserManager

from bot.imagine.views import OUTPAINT_ACTIONS
from tests.bot.conftest import button, custom_ids, decode, delivered_job, has_image, mask_png, png

EPHEMERAL = 64


async def test_txt2img_shows_queue_then_delivers_png_with_metadata(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        handle = await fake.send_slash_command("imagine", {"prompt": "a red cube", "seed": 7}, user=fake.member)
        callback = await handle.wait_for_callback()
        assert callback["type"] == 4 and "Queued" in callback["data"]["content"]
        assert any(c.startswith("imagine:cancel:") for c in custom_ids(callback["data"]))
        final = await handle.wait_for_original(has_image, timeout=60)
        assert "**a red cube**" in final["content"] and "seed 7" in final["content"] and "tiny" in final["content"]
        (attachment,) = final["attachments"]
        image = decode(fake, attachment)
        info = ParserManager().parse(image)
        assert info.full_prompt == "a red cube" and info.samplers[0].parameters["seed"] == "7"
        assert image.size == (64, 64)
        actions = {c.split(":")[1] for c in custom_ids(final)}
        assert actions == {"reroll", "vary", "upscale", "edit", "info", "delete", *OUTPAINT_ACTIONS}
        job_id = int(button(final, "imagine:reroll").split(":")[2])
        job = await delivered_job(running, job_id)
        assert job.user_id == fake.member.id


async def test_img2img_and_inpainting_from_attachments(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        img = await fake.send_slash_command(
            "imagine",
            {"prompt": "winter", "strength": 0.5},
            attachments={"image": ("in.png", png((96, 64)), "image/png")},
        )
        assert (await img.wait_for_callback())["type"] == 5  # deferred while the image downloads
        final = await img.wait_for_original(has_image, timeout=60)
        assert "img2img (strength 0.5)" in final["content"]
        assert decode(fake, final["attachments"][0]).size[0] > decode(fake, final["attachments"][0]).size[1]

        inp = await fake.send_slash_command(
            "imagine",
            {"prompt": "a door"},
            attachments={"image": ("in.png", png(), "image/png"), "mask": ("m.png", mask_png(), "image/png")},
        )
        final = await inp.wait_for_original(has_image, timeout=60)
        assert "inpaint" in final["content"]


async def test_count_four_is_a_grid_with_per_image_buttons(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        handle = await fake.send_slash_command("imagine", {"prompt": "four cats", "count": 4, "seed": 1})
        final = await handle.wait_for_original(has_image, timeout=60)
        assert decode(fake, final["attachments"][0]).size == (128, 128)
        labels = [c.get("label") for row in final["components"] for c in row["components"]]
        assert labels[:8] == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4"]
        assert "seeds 1–4" in final["content"]


async def test_bad_options_are_refused_only_to_the_user(start_bot) -> None:
    async with start_bot(max_steps=10) as running:
        fake = running.fake
        handle = await fake.send_slash_command("imagine", {"prompt": "x", "steps": 20})
        callback = await handle.wait_for_callback()
        assert callback["data"]["flags"] & EPHEMERAL
        assert "20 steps is over this server's limit of 10" in callback["data"]["content"]
        bad = await fake.send_slash_command(
            "imagine", {"prompt": "x"}, attachments={"image": ("a.txt", b"not a picture", "text/plain")}
        )
        refusal = await bad.wait_for_message(lambda m: "⚠️" in m["content"])
        assert "is not a picture we can read" in refusal["content"]
        assert refusal["flags"] & EPHEMERAL and bad.original is None  # the public "thinking…" is gone
        assert await running.store.recent_jobs() == []  # nothing half-written


async def test_prompt_text_never_pings(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        handle = await fake.send_slash_command("imagine", {"prompt": f"@everyone <@{fake.other_member.id}> **bold**"})
        final = await handle.wait_for_original(has_image, timeout=60)
        assert "@\u200beveryone" in final["content"] and "\\*\\*bold\\*\\*" in final["content"]
        bot_writes = [r for r in fake.requests if r.method in ("POST", "PATCH") and r.json is not None]
        assert bot_writes and all(
            (r.json.get("allowed_mentions") or {}).get("parse", []) == [] for r in bot_writes if "content" in r.json
        )


async def test_autocomplete_for_model_and_sampler(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        models = await fake.send_autocomplete("imagine", {"prompt": "x", "model": "ti"}, focused="model")
        assert [c["value"] for c in await models.wait_for_choices()] == ["tiny"]
        samplers = await fake.send_autocomplete("imagine", {"prompt": "x", "sampler": "dpm++ 2m"}, focused="sampler")
        names = [c["value"] for c in await samplers.wait_for_choices()]
        assert "DPM++ 2M Karras" in names and all(re.search("DPM\\+\\+ 2M", n) for n in names)
