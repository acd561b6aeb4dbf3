"""/imagine with a DeepFloyd IF model: the real bot and discord.py client against the loopback fake Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from sd_parsers import ParserManager

from bot.runner import bot_parts
from generation.engine import Engine
from generation.specs import ModelSpec
from tests.bot.conftest import Running, button, decode, has_image, make_config
from tests.fake_discord import FakeDiscord, running_client

EPHEMERAL = 64


@pytest.fixture(scope="session")
def tiny_if_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny IF cascade on disk, written once per session."""
    from generation.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-if", "if")


@pytest.fixture
def start_if_bot(fake_discord: FakeDiscord, tiny_sd_dir: Path, tiny_if_dir: Path, tmp_path: Path):
    """`async with start_if_bot() as running:` — the rig's usual config with a `tiny-if` model added."""

    @asynccontextmanager
    async def start() -> AsyncIterator[Running]:
        config = make_config(fake_discord, tiny_sd_dir, tmp_path)
        model = ModelSpec(name="tiny-if", source=str(tiny_if_dir), kind="if", steps=3, width=64, height=64)
        config = replace(config, models=(*config.models, model))
        engine = Engine(config.model_map, device="cpu", preview_every=2)
        async with bot_parts(config, engine) as (bot, worker), running_client(bot, fake_discord):
            await fake_discord.wait_until(lambda: fake_discord.registered_commands(fake_discord.guild.id) or None)
            yield Running(fake_discord, bot, worker, config)

    return start


async def test_imagine_with_the_if_model_delivers_its_4x_image(start_if_bot) -> None:
    async with start_if_bot() as running:
        fake = running.fake
        handle = await fake.send_slash_command(
            "imagine", {"prompt": "a sign that says hello", "model": "tiny-if", "seed": 7}, user=fake.member
        )
        callback = await handle.wait_for_callback()
        assert callback["type"] == 4 and "Queued" in callback["data"]["content"]
        final = await handle.wait_for_original(has_image, timeout=90)
        assert "**a sign that says hello**" in final["content"] and "tiny-if" in final["content"]
        (attachment,) = final["attachments"]
        image = decode(fake, attachment)
        assert image.size == (256, 256)  # stage I at 64x64, stage II 4x
        info = ParserManager().parse(image)
        assert info.full_prompt == "a sign that says hello" and info.samplers[0].parameters["seed"] == "7"
        assert "Model: tiny-if" in image.info["parameters"]


async def test_a_sampler_for_the_if_model_is_refused_to_the_user_only(start_if_bot) -> None:
    async with start_if_bot() as running:
        fake = running.fake
        handle = await fake.send_slash_command("imagine", {"prompt": "x", "model": "tiny-if", "sampler": "Euler a"})
        callback = await handle.wait_for_callback()
        assert callback["data"]["flags"] & EPHEMERAL
        assert "has its own sampler" in callback["data"]["content"]
        assert await running.store.recent_jobs() == []


async def test_vary_and_upscale_on_an_if_result_start_from_its_picture(start_if_bot) -> None:
    async with start_if_bot() as running:
        fake = running.fake
        # 4 steps: Upscale at strength 0.3 runs int(4 x 0.3) = 1 step per stage.
        job = {"prompt": "a sign", "model": "tiny-if", "seed": 3, "steps": 4}
        handle = await fake.send_slash_command("imagine", job)
        result = await handle.wait_for_original(has_image, timeout=90)
        # The 256x256 picture is fitted back to the 64x64 stage I size (Vary) or twice it (Upscale: 512 out).
        for action, size, stage_one in (("imagine:vary", (256, 256), 64), ("imagine:upscale", (512, 512), 128)):
            click = await fake.send_button_click(int(result["id"]), button(result, action))
            assert "Queued" in (await click.wait_for_callback())["data"]["content"], action
            new = await click.wait_for_original(has_image, timeout=90)
            job = await running.store.get_job(int(button(new, "imagine:info").split(":")[2]))
            assert job.mode.value == "img2img" and job.params["width"] == stage_one, action
            assert decode(fake, new["attachments"][0]).size == size, action
