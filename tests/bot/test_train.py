"""/train through the loopback Discord: photos in, a LoRA out that /imagine uses; the message menu and its form;
the buttons on the result; and refusals that are ephemeral and store nothing."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bot.runner import bot_parts
from generation.catalog import trained_name
from generation.engine import Engine
from storage.records import JobStatus
from tests.bot.conftest import Running, button, custom_ids, decode, has_image, make_config
from tests.fake_discord import FakeDiscord, running_client
from tests.support.threads import one_torch_thread

EPHEMERAL = 64


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models on one thread (tests/support/threads.py says why)."""
    with one_torch_thread():
        yield


def photo(i: int) -> tuple[str, bytes, str]:
    """A red disc on white: the subject."""
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(image).ellipse((8 + 4 * i, 8, 48 + 4 * i, 48), fill=(200, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return (f"ball-{i}.png", buffer.getvalue(), "image/png")


def photo_options(count: int) -> dict[str, tuple[str, bytes, str]]:
    return {f"photo{i}": photo(i) for i in range(1, count + 1)}


@pytest.fixture
def start_train_bot(fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, bot_engine: Engine):
    """The bot on the tiny model, training 2 steps per turn at a learning rate that moves a tiny UNet."""

    @asynccontextmanager
    async def start(**limits) -> AsyncIterator[Running]:
        config = make_config(fake_discord, tiny_sd_dir, tmp_path, **limits)
        generation = dataclasses.replace(config.generation, train_chunk_steps=2, train_learning_rate=5e-2)
        config = dataclasses.replace(config, generation=generation)
        bot_engine.models = config.model_map
        async with bot_parts(config, bot_engine) as (bot, worker), running_client(bot, fake_discord):
            await fake_discord.wait_until(lambda: fake_discord.registered_commands(fake_discord.guild.id) or None)
            yield Running(fake_discord, bot, worker, config)

    return start


def is_done(message: dict) -> bool:
    return "✅ Done" in (message.get("content") or "")


def pixels(fake: FakeDiscord, message: dict) -> np.ndarray:
    attachment = next(a for a in message["attachments"] if "preview" not in a["filename"])
    return np.asarray(decode(fake, attachment).convert("RGB"), dtype=np.int16)


async def train(running: Running, **options) -> dict:
    fake = running.fake
    fields = {"name": "Red ball", "trigger": "sks", "subject": "ball", "steps": 6} | options
    handle = await fake.send_slash_command("train", fields, attachments=photo_options(4))
    return await handle.wait_for_original(is_done, timeout=120)


async def test_train_makes_a_lora_that_imagine_uses(start_train_bot) -> None:
    async with start_train_bot() as running:
        fake = running.fake
        done = await train(running)
        assert "lora:Red ball" in done["content"] and "`sks`" in done["content"]
        samples = [a for a in done["attachments"] if a["filename"].startswith("sample-")]
        assert len(samples) == 2 and decode(fake, samples[0]).size == (64, 64)
        assert [c.split(":")[1] for c in custom_ids(done)] == ["use", "share", "delete"]
        [lora] = await running.store.live_loras()
        assert (lora.name, lora.trigger_token, lora.owner_id, lora.shared) == ("Red ball", "sks", fake.member.id, False)

        prompt = {"prompt": "a photo of sks ball", "seed": 7}
        base = await (await fake.send_slash_command("imagine", prompt)).wait_for_original(has_image, timeout=60)
        handle = await fake.send_slash_command("imagine", prompt | {"lora": "Red ball"})
        styled = await handle.wait_for_original(has_image, timeout=60)
        assert np.abs(pixels(fake, styled) - pixels(fake, base)).max() > 0, "the LoRA changes the picture"
        job = (await running.store.recent_jobs())[0]
        assert job.params["loras"] == [[trained_name("Red ball", lora.id), 1.0]]


async def test_train_a_style_from_a_message_with_the_form(start_train_bot) -> None:
    async with start_train_bot() as running:
        fake = running.fake
        posted = await fake.post_user_message("my ball", attachments=[photo(i) for i in range(1, 4)])
        menu = await fake.send_message_command("Train a style", int(posted["id"]))
        modal = await menu.wait_for_modal()
        assert modal["custom_id"] == "train:modal"
        submitted = await fake.send_modal_submit(
            "train:modal", {"name": "Ball style", "trigger": "zxq", "subject": "ball", "steps": "4"}
        )
        await submitted.wait_for_original(is_done, timeout=120)
        assert await running.store.active_trainings(fake.member.id) == []  # finished
        [lora] = await running.store.live_loras()
        assert lora.name == "Ball style" and lora.trigger_token == "zxq"


async def test_the_buttons_share_use_and_delete_the_lora(start_train_bot) -> None:
    async with start_train_bot() as running:
        fake = running.fake
        done = await train(running)
        [lora] = await running.store.live_loras()
        name = trained_name(lora.name, lora.id)

        refused = await fake.send_button_click(int(done["id"]), button(done, "train:share"), user=fake.other_member)
        callback = await refused.wait_for_callback()
        assert callback["data"]["flags"] & EPHEMERAL and "Only the member who trained" in callback["data"]["content"]
        used = await fake.send_button_click(int(done["id"]), button(done, "train:use"), user=fake.other_member)
        callback = await used.wait_for_callback()
        assert "not shared on this server" in callback["data"]["content"]

        shared = await fake.send_button_click(int(done["id"]), button(done, "train:share"))
        await shared.wait_for_callback()
        assert (await running.store.get_lora(lora.id)).shared
        message = fake.store.get(int(done["id"])).data
        assert button(message, "train:unshare")

        use = await fake.send_button_click(int(done["id"]), button(done, "train:use"), user=fake.other_member)
        modal = await use.wait_for_modal()
        assert f"<lora:{name}:1>" in str(modal)
        submitted = await fake.send_modal_submit(modal["custom_id"], {"prompt": f"sks ball <lora:{name}:1>"})
        await submitted.wait_for_original(has_image, timeout=60)
        job = (await running.store.recent_jobs())[0]
        assert job.user_id == fake.other_member.id and job.params["loras"] == [[name, 1.0]]

        deleted = await fake.send_button_click(int(done["id"]), button(done, "train:delete"))
        await deleted.wait_for_callback()
        assert (await running.store.get_lora(lora.id)).deleted_at is not None
        assert name not in running.bot.services.catalog.trained
        assert "LoRA deleted by its owner" in fake.store.get(int(done["id"])).data["content"]


async def test_refusals_are_ephemeral_and_store_nothing(start_train_bot, tmp_path: Path) -> None:
    async with start_train_bot(max_train_photos=3) as running:
        fake = running.fake
        bad = photo_options(3) | {"photo2": ("notes.txt", b"not a picture", "text/plain")}
        cases = [
            ({}, photo_options(4), "4 photos is over this server's limit of 3"),
            ({}, bad, "photo 2 (notes.txt)"),
            ({"name": "a:b"}, photo_options(3), "cannot hold any of"),
            ({"trigger": "two words"}, photo_options(3), "one word"),
            ({"steps": 5000}, photo_options(3), "max_train_steps"),
        ]
        for options, photos, message in cases:
            fields = {"name": "Red ball", "trigger": "sks"} | options
            handle = await fake.send_slash_command("train", fields, attachments=photos)
            answer = await handle.wait_for_message(lambda m: m.get("flags", 0) & EPHEMERAL, timeout=10)
            assert message in answer["content"], (options, answer["content"])
        posted = await fake.post_user_message("two", attachments=[photo(1), photo(2)])
        menu = await fake.send_message_command("Train a style", int(posted["id"]))
        callback = await menu.wait_for_callback()
        assert callback["data"]["flags"] & EPHEMERAL and "that message has 2" in callback["data"]["content"]

        await running.store.set_guild_setting(fake.guild.id, "training", False, by_user=fake.moderator.id)
        handle = await fake.send_slash_command("train", {"name": "x", "trigger": "sks"}, attachments=photo_options(3))
        callback = await handle.wait_for_callback()
        assert callback["data"]["flags"] & EPHEMERAL and "`training`: off" in callback["data"]["content"]

        assert await running.store.active_trainings(fake.member.id) == []
        assert not (running.config.storage.images_dir / "inputs").exists() or not any(
            (running.config.storage.images_dir / "inputs").iterdir()
        )


async def test_a_member_may_train_only_so_often_and_cancel(start_train_bot) -> None:
    async with start_train_bot(daily_trainings_per_user=1) as running:
        fake = running.fake
        fields = {"name": "Slow", "trigger": "sks", "steps": 200}
        handle = await fake.send_slash_command("train", fields, attachments=photo_options(3))
        queued = await handle.wait_for_original(lambda m: "train:cancel" in str(m.get("components")), timeout=30)
        cancel = await fake.send_button_click(int(queued["id"]), button(queued, "train:cancel"))
        await cancel.wait_for_callback()
        await handle.wait_for_original(lambda m: "Cancelled" in (m.get("content") or ""), timeout=30)
        training = await running.store.get_training(1)
        assert training is not None and training.status is JobStatus.CANCELLED
        assert await running.store.live_loras() == []

        again = await fake.send_slash_command("train", fields | {"name": "Again"}, attachments=photo_options(3))
        callback = await again.wait_for_callback()
        assert callback["data"]["flags"] & EPHEMERAL and "1 of your 1 trainings today" in callback["data"]["content"]
        assert await running.store.get_training(2) is None  # nothing stored


async def test_loras_list_and_delete_for_members_and_moderators(start_train_bot) -> None:
    async with start_train_bot() as running:
        fake = running.fake
        await train(running)
        [lora] = await running.store.live_loras()

        listed = await (await fake.send_slash_command("loras list")).wait_for_callback()
        [embed] = listed["data"]["embeds"]
        assert listed["data"]["flags"] & EPHEMERAL and "**Red ball** (yours, private)" in embed["description"]
        nothing = await (await fake.send_slash_command("loras list", user=fake.other_member)).wait_for_callback()
        assert "No LoRAs here yet" in nothing["data"]["content"]  # private: not shown to others

        refused = await fake.send_slash_command("loras delete", {"lora": str(lora.id)}, user=fake.other_member)
        assert "no LoRA called" in (await refused.wait_for_callback())["data"]["content"]
        choices = await fake.send_autocomplete("loras delete", {"lora": ""}, focused="lora", user=fake.moderator)
        assert [c["value"] for c in await choices.wait_for_choices()] == [str(lora.id)]  # the server's, for moderators
        deleted = await fake.send_slash_command("loras delete", {"lora": str(lora.id)}, user=fake.moderator)
        assert "(as a moderator)" in (await deleted.wait_for_callback())["data"]["content"]
        assert await running.store.live_loras() == []
        assert trained_name(lora.name, lora.id) not in running.bot.services.catalog.trained


async def test_the_message_menu_refuses_before_the_form_when_training_is_off(start_train_bot) -> None:
    async with start_train_bot() as running:
        fake = running.fake
        await running.store.set_guild_setting(fake.guild.id, "training", False, by_user=fake.moderator.id)
        posted = await fake.post_user_message("my ball", attachments=[photo(i) for i in range(1, 4)])
        menu = await fake.send_message_command("Train a style", int(posted["id"]))
        callback = await menu.wait_for_callback()
        assert callback["data"]["flags"] & EPHEMERAL and "`training`: off" in callback["data"]["content"]
