"""The real bot (store, queue, GPU worker, discord.py client) against the loopback fake Discord."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from bot.app import ImagineBot
from bot.config import Config, DiscordConfig, GenerationConfig, StorageConfig
from bot.runner import bot_parts
from generation.engine import Engine
from generation.specs import ModelSpec
from jobs.limits import Limits
from jobs.worker import Worker
from storage.records import JobRecord
from tests.fake_discord import FakeDiscord, running_client


@dataclass
class Running:
    """A started bot and what the test needs to drive and inspect it."""

    fake: FakeDiscord
    bot: ImagineBot
    worker: Worker
    config: Config

    @property
    def store(self):
        return self.bot.services.store


def make_config(fake: FakeDiscord, model_dir: Path, data: Path, **limits) -> Config:
    """Config for the tiny model, data under `data`, commands synced to the fake guild."""
    return Config(
        discord=DiscordConfig(api_base=fake.api_base, gateway_url=fake.gateway_url, guild_ids=(fake.guild.id,)),
        storage=StorageConfig(path=data / "imagine.sqlite3", images_dir=data / "images"),
        generation=GenerationConfig(device="cpu", default_model="tiny", max_batch=4, preview_every=2),
        limits=Limits(**({"max_steps": 60, "max_queued_per_user": 10} | limits)),
        models=(ModelSpec(name="tiny", source=str(model_dir), steps=4, guidance=7.0, width=64, height=64),),
    )


@pytest.fixture(scope="module")
def bot_engine(tiny_sd_dir: Path) -> Engine:
    """One engine (and loaded tiny model) shared by a module's bots, as one process would."""
    return Engine({"tiny": ModelSpec(name="tiny", source=str(tiny_sd_dir))}, device="cpu", preview_every=2)


@pytest.fixture
def start_bot(fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, bot_engine: Engine):
    """`async with start_bot(**limits) as running:` — a bot on a fresh (or the same) data folder."""

    @asynccontextmanager
    async def start(data: Path | None = None, **limits) -> AsyncIterator[Running]:
        config = make_config(fake_discord, tiny_sd_dir, data or tmp_path, **limits)
        bot_engine.models = config.model_map
        async with bot_parts(config, bot_engine) as (bot, worker), running_client(bot, fake_discord):
            await fake_discord.wait_until(lambda: fake_discord.registered_commands(fake_discord.guild.id) or None)
            yield Running(fake_discord, bot, worker, config)

    return start


@contextmanager
def slow_steps(engine: Engine, seconds: float) -> Iterator[None]:
    """Make every UNet call of the tiny model take at least `seconds`, like a big model on a GPU."""
    unet = engine.load("tiny").core_module()
    hook = unet.register_forward_pre_hook(lambda module, args: time.sleep(seconds))
    try:
        yield
    finally:
        hook.remove()


def png(size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_png(size: tuple[int, int] = (64, 64)) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, (16, 16, 48, 48))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def has_image(message: dict) -> bool:
    return any(
        a["filename"].endswith((".png", ".jpg")) and "preview" not in a["filename"] for a in message["attachments"]
    )


def custom_ids(message: dict) -> list[str]:
    return [c["custom_id"] for row in message.get("components") or [] for c in row.get("components", [])]


def button(message: dict, prefix: str) -> str:
    """The custom_id of the message's button starting with `prefix` (e.g. 'imagine:reroll')."""
    matches = [c for c in custom_ids(message) if c.startswith(prefix)]
    assert matches, f"no {prefix} button in {custom_ids(message)}"
    return matches[0]


def decode(fake: FakeDiscord, attachment: dict) -> Image.Image:
    return Image.open(io.BytesIO(fake.attachment_bytes(attachment)))


Predicate = Callable[[dict], bool]


async def delivered_job(running: Running, job_id: int, timeout: float = 10.0) -> JobRecord:
    """The job once its delivery is recorded: that happens just after the message is sent, so wait, not race."""
    async with asyncio.timeout(timeout):
        while True:
            job = await running.store.get_job(job_id)
            if job is not None and job.delivered_at is not None:
                return job
            await asyncio.sleep(0.02)
