"""/imagine in French: the real bot and discord.py client against the loopback fake Discord, a tiny MarianMT."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from bot.config import TranslationConfig
from bot.render import result_text, safe_text
from bot.runner import bot_parts
from generation.engine import Engine
from generation.tiny import write_tiny_model
from storage import Store
from tests.bot.conftest import Running, button, decode, delivered_job, has_image, make_config
from tests.bot.test_history import listed_ids
from tests.fake_discord import FakeDiscord, running_client
from tests.storage.factories import txt2img
from tests.support.translation import raw_translation

FRENCH = "une forêt enchantée avec des champignons lumineux, peinture à l'huile"
ENGLISH = "a cat sitting on a roof at sunset, highly detailed"


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("translation") / "marian", "translation")


@asynccontextmanager
async def bot_with(
    fake: FakeDiscord, model_dir: Path, data: Path, engine: Engine, translation: TranslationConfig
) -> AsyncIterator[Running]:
    """The tiny SD bot with this `[translation]` (lingua told French from English only: quick and small)."""
    config = replace(make_config(fake, model_dir, data), translation=translation)
    engine.models = config.model_map
    async with bot_parts(config, engine) as (bot, worker), running_client(bot, fake):
        await fake.wait_until(lambda: fake.registered_commands(fake.guild.id) or None)
        yield Running(fake, bot, worker, config)


def _raw_sd(model_dir: Path, prompt: str, seed: int) -> np.ndarray:
    """What diffusers makes of the typed prompt with the tiny model's settings (4 steps, guidance 7, 64x64)."""
    pipe = StableDiffusionPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(seed)
    image = pipe(prompt, generator=generator, num_inference_steps=4, guidance_scale=7.0, height=64, width=64).images[0]
    return np.asarray(image)


async def _imagine(running: Running, prompt: str, seed: int) -> tuple[dict, int]:
    handle = await running.fake.send_slash_command("imagine", {"prompt": prompt, "seed": seed})
    final = await handle.wait_for_original(has_image, timeout=60)
    return final, int(button(final, "imagine:reroll").split(":")[2])


async def _history(running: Running, search: str) -> list[int]:
    handle = await running.fake.send_slash_command("history", {"search": search}, user=running.fake.member)
    return listed_ids(await handle.wait_for_original())


async def test_a_french_prompt_is_translated_shown_stored_and_found_by_either_text(
    fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, bot_engine: Engine, marian_dir: Path
) -> None:
    english = raw_translation(marian_dir, FRENCH)
    settings = TranslationConfig(model=str(marian_dir), languages=("fr",))
    async with bot_with(fake_discord, tiny_sd_dir, tmp_path, bot_engine, settings) as running:
        final, job_id = await _imagine(running, FRENCH, seed=5)
        headline, translated, _ = final["content"].split("\n")
        assert headline == f"**{safe_text(FRENCH)}**"  # what was typed, as everywhere else
        assert translated == f"translated from French: {safe_text(english)}"

        image = decode(running.fake, final["attachments"][0])
        prompt, settings_line = image.info["parameters"].split("\n")
        assert prompt == english and "Translated from: French" in settings_line
        assert f"Original prompt: {json.dumps(FRENCH, ensure_ascii=False)}" in settings_line
        assert np.array_equal(np.asarray(image.convert("RGB")), _raw_sd(tiny_sd_dir, english, 5))

        job = await delivered_job(running, job_id)
        assert (job.prompt, job.prompt_language, job.translated_prompt) == (FRENCH, "French", english)
        english_word = re.findall(r"\w+", english)[0]
        assert await _history(running, "champignons") == [job_id]
        assert await _history(running, english_word) == [job_id]

        # English prompts are made as they always were, with nothing said about translation.
        final, plain_id = await _imagine(running, ENGLISH, seed=6)
        assert "translated" not in final["content"] and len(final["content"].split("\n")) == 2
        plain = decode(running.fake, final["attachments"][0])
        assert np.array_equal(np.asarray(plain.convert("RGB")), _raw_sd(tiny_sd_dir, ENGLISH, 6))
        assert (await delivered_job(running, plain_id)).translated_prompt is None


async def test_without_a_translation_model_nothing_changes(
    fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, bot_engine: Engine
) -> None:
    async with bot_with(fake_discord, tiny_sd_dir, tmp_path, bot_engine, TranslationConfig()) as running:
        final, job_id = await _imagine(running, FRENCH, seed=5)
        assert "translated" not in final["content"]
        image = decode(running.fake, final["attachments"][0])
        assert image.info["parameters"].startswith(FRENCH + "\n") and "Original prompt" not in image.info["parameters"]
        assert np.array_equal(np.asarray(image.convert("RGB")), _raw_sd(tiny_sd_dir, FRENCH, 5))  # pixel for pixel
        job = await delivered_job(running, job_id)
        assert (job.prompt_language, job.translated_prompt, job.translated_negative) == (None, None, None)


async def test_the_result_text_names_what_was_translated_within_discords_limit(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db.sqlite3", tmp_path / "images") as store:
        typed = await store.create_job(txt2img("x" * 2000, negative_prompt="flou"), user_id=1, guild_id=2, channel_id=3)
    both = replace(typed, prompt_language="French", translated_prompt="**y** @everyone " * 200, translated_negative="b")
    text = result_text(both, [7], mention=True)
    assert len(text) <= 2000 and "\\*\\*y\\*\\* @\u200beveryone" in text
    assert "\nnegative prompt translated: b\n" in text  # the language is said once, on the prompt's line
    only_negative = replace(typed, prompt_language="French", translated_negative="blurry")
    lines = result_text(only_negative, [7], mention=False).split("\n")
    assert lines[1] == "negative prompt translated from French: blurry" and len(lines) == 3
