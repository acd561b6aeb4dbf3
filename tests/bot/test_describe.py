"""/describe through the loopback Discord: four suggestions, and buttons that make them with /imagine."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from bot.config import DescribeConfig
from bot.describe import suggestion_in, suggestions_text
from bot.runner import bot_parts
from generation.captioning import Captioner
from generation.engine import Engine
from generation.tiny.captioner import write_tiny_captioner
from tests.bot.conftest import Running, custom_ids, has_image, make_config, png
from tests.fake_discord import FakeDiscord, running_client

EPHEMERAL = 64
KEYCAPS = ["1️⃣", "2️⃣", "3️⃣", "4️⃣"]


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_captioner(tmp_path_factory.mktemp("models") / "tiny-blip")


@pytest.fixture
def start_describe_bot(fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, bot_engine: Engine):
    """`async with start_describe_bot(blip_dir) as running:`; None: a bot without `[describe] model`."""

    @asynccontextmanager
    async def start(caption_model: Path | None) -> AsyncIterator[Running]:
        config = make_config(fake_discord, tiny_sd_dir, tmp_path)
        config = replace(config, describe=DescribeConfig(model=str(caption_model) if caption_model else ""))
        bot_engine.models = config.model_map
        async with bot_parts(config, bot_engine) as (bot, worker), running_client(bot, fake_discord):
            await fake_discord.wait_until(lambda: fake_discord.registered_commands(fake_discord.guild.id) or None)
            yield Running(fake_discord, bot, worker, config)

    return start


async def describe(fake: FakeDiscord, data: bytes, filename: str = "cat.png", content_type: str = "image/png"):
    return await fake.send_slash_command("describe", attachments={"image": (filename, data, content_type)})


async def test_four_suggestions_whose_buttons_make_them(start_describe_bot, blip_dir: Path) -> None:
    picture = png((96, 64), (30, 90, 200))
    expected = Captioner(str(blip_dir), device="cpu").suggestions(Image.open(io.BytesIO(picture)))
    async with start_describe_bot(blip_dir) as running:
        fake = running.fake
        handle = await describe(fake, picture)
        reply = await handle.wait_for_original(lambda m: m.get("components"), timeout=30)
        assert not reply["flags"] & EPHEMERAL  # for the channel: anyone may press a number
        assert reply["content"].splitlines()[1:] == [f"{KEYCAPS[i]} {text}" for i, text in enumerate(expected)]
        assert custom_ids(reply) == ["describe:1", "describe:2", "describe:3", "describe:4"]
    async with start_describe_bot(blip_dir) as running:  # restarted: the buttons keep nothing but the message
        fake, store = running.fake, running.store
        click = await fake.send_button_click(int(reply["id"]), "describe:2", user=fake.other_member)
        assert "Queued" in (await click.wait_for_callback())["data"]["content"]
        await click.wait_for_original(has_image, timeout=60)
        [job] = await store.recent_jobs()
        assert job.prompt == expected[1] and job.user_id == fake.other_member.id and job.model == "tiny"


async def test_the_servers_rules_apply(start_describe_bot, blip_dir: Path) -> None:
    async with start_describe_bot(blip_dir) as running:
        fake, store, guild = running.fake, running.store, running.fake.guild.id
        reply = await (await describe(fake, png())).wait_for_original(lambda m: m.get("components"), timeout=30)
        await store.set_guild_setting(guild, "banned_words", ["painting"], by_user=fake.owner.id)
        click = await fake.send_button_click(int(reply["id"]), "describe:3")  # "a painting of …"
        refusal = (await click.wait_for_callback())["data"]
        assert refusal["flags"] & EPHEMERAL and "||painting|| (`banned_words`)" in refusal["content"]
        await store.set_guild_setting(guild, "blocked_users", [fake.member.id], by_user=fake.owner.id)
        blocked = (await (await describe(fake, png())).wait_for_callback())["data"]
        assert blocked["flags"] & EPHEMERAL and "blocked you from making images" in blocked["content"]
        assert await store.recent_jobs() == []


async def test_not_set_up_and_not_a_picture_are_refused_to_the_user(start_describe_bot, blip_dir: Path) -> None:
    async with start_describe_bot(None) as running:
        refusal = (await (await describe(running.fake, png())).wait_for_callback())["data"]
        assert refusal["flags"] & EPHEMERAL and "/describe is not set up on this bot" in refusal["content"]
    async with start_describe_bot(blip_dir) as running:
        bad = await describe(running.fake, b"not a picture", "notes.txt", "text/plain")
        refusal = await bad.wait_for_message(lambda m: "⚠️" in m["content"])
        assert "The image (notes.txt) is not a picture we can read" in refusal["content"]
        assert refusal["flags"] & EPHEMERAL and bad.original is None  # the public "thinking…" is gone


def test_suggestions_read_back_as_written_whatever_they_hold() -> None:
    tricky = ["a *bold* cat_with \\ slash", "@everyone look <@123456789012345678>", "# a heading", "plain"]
    content = suggestions_text(tricky)
    assert "@everyone" not in content and "\\*bold\\*" in content  # shown inert
    assert [suggestion_in(content, n) for n in range(1, 6)] == [*tricky, None]
