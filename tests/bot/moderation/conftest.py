"""Bots with a different engine (a safety checker whose flags the test decides) or extra models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from bot.runner import bot_parts
from generation.engine import Engine
from generation.specs import ModelSpec
from tests.bot.conftest import Running, make_config
from tests.fake_discord import FakeDiscord, running_client


class ForcedFlags:
    """A safety checker that flags what the test says: `flags[i]` for the i-th image of each call."""

    def __init__(self) -> None:
        self.flags = [True]
        self.calls = 0

    def __call__(self, images: list[Image.Image]) -> list[bool]:
        self.calls += 1
        return [self.flags[i % len(self.flags)] for i in range(len(images))]


@pytest.fixture(scope="module")
def forced_flags() -> ForcedFlags:
    return ForcedFlags()


@pytest.fixture(scope="module")
def checked_engine(tiny_sd_dir: Path, forced_flags: ForcedFlags) -> Engine:
    """The tiny model with a safety checker on it."""
    return Engine(
        {"tiny": ModelSpec(name="tiny", source=str(tiny_sd_dir))},
        device="cpu",
        preview_every=2,
        safety_checkers={"tiny": forced_flags},
    )


@pytest.fixture
def start_custom_bot(fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, bot_engine: Engine):
    """`async with start_custom_bot(engine=..., extra_models=(...)) as running:`."""

    @asynccontextmanager
    async def start(engine: Engine | None = None, extra_models: tuple[str, ...] = ()) -> AsyncIterator[Running]:
        config = make_config(fake_discord, tiny_sd_dir, tmp_path)
        tiny = config.models[0]
        config = replace(config, models=(tiny, *(replace(tiny, name=name) for name in extra_models)))
        engine = engine or bot_engine
        engine.models = config.model_map
        async with bot_parts(config, engine) as (bot, worker), running_client(bot, fake_discord):
            await fake_discord.wait_until(lambda: fake_discord.registered_commands(fake_discord.guild.id) or None)
            yield Running(fake_discord, bot, worker, config)

    return start
