"""/imagine with a DALL·E Mini model: the real bot and discord.py client against the loopback fake Discord."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from bot.runner import bot_parts
from generation.specs import ModelSpec
from generation.tiny import write_tiny_model
from tests.bot.conftest import decode, has_image, make_config
from tests.fake_discord import FakeDiscord, running_client
from tests.support.threads import one_torch_thread


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models on one thread (tests/support/threads.py says why)."""
    with one_torch_thread():
        yield


async def test_imagine_with_dalle_mini_delivers_a_grid_with_its_settings(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    model = write_tiny_model(tmp_path / "tiny-dalle", "dalle-mini")
    base = make_config(fake_discord, model, tmp_path / "data")
    mini = ModelSpec(name="mini", source=str(model), kind="dalle-mini", steps=16, guidance=16.0, width=256, height=256)
    config = replace(base, models=(mini,), generation=replace(base.generation, default_model="mini"))
    async with bot_parts(config) as (bot, _worker), running_client(bot, fake_discord):
        await fake_discord.wait_until(lambda: fake_discord.registered_commands(fake_discord.guild.id) or None)
        options = {"prompt": "a lighthouse at dusk", "seed": 7, "count": 2}
        handle = await fake_discord.send_slash_command("imagine", options, user=fake_discord.member)
        final = await handle.wait_for_original(has_image, timeout=120)
        assert "**a lighthouse at dusk**" in final["content"] and "seeds 7–8" in final["content"]
        grid = decode(fake_discord, final["attachments"][0])
        assert grid.size == (512, 256)  # two 256x256 pictures side by side
        store = bot.services.store
        (job,) = await store.recent_jobs()
        for record, seed in zip(await store.images_for_job(job.id), (7, 8), strict=True):
            with Image.open(store.images_dir / record.path) as image:
                assert image.size == (256, 256)
                parameters = image.info["parameters"]
            assert f"Steps: 16, Sampler: min-dalle top-k 256, CFG scale: 16, Seed: {seed}, Size: 256x256" in parameters

        wide = await fake_discord.send_slash_command("imagine", {"prompt": "a cat", "size": "16:9"})
        refusal = (await wide.wait_for_callback())["data"]["content"]
        assert "The model 'mini' (DALL·E Mini) makes 256x256 pictures only, not 344x192" in refusal
