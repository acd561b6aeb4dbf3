"""LoRAs through the bot: /imagine's lora option and its picker, refusals, remix replies and Edit with tags."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.runner import bot_parts
from generation.engine import Engine
from generation.specs import LoraSpec, ModelSpec
from generation.tiny.lora import write_tiny_lora
from tests.bot.conftest import Running, button, delivered_job, has_image, make_config, png
from tests.bot.test_remix import answer_to, job_id_of
from tests.fake_discord import FakeDiscord, running_client

EPHEMERAL = 64


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoraSpec, ...]:
    root = tmp_path_factory.mktemp("bot-loras")
    return (
        LoraSpec(name="ink", source=str(write_tiny_lora(root / "ink.safetensors", "sd", 1)), description="Ink wash"),
        LoraSpec(name="fog", source=str(write_tiny_lora(root / "fog.safetensors", "sd", 2)), weight=0.6),
        LoraSpec(name="neon", source=str(write_tiny_lora(root / "neon.safetensors", "sdxl", 3)), kind="sdxl"),
    )


@pytest.fixture(scope="module")
def lora_bot_engine(tiny_sd_dir: Path, loras: tuple[LoraSpec, ...]) -> Engine:
    spec = ModelSpec(name="tiny", source=str(tiny_sd_dir))
    return Engine({"tiny": spec}, device="cpu", preview_every=2, loras={lora.name: lora for lora in loras})


@pytest.fixture
def start_lora_bot(fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, lora_bot_engine: Engine, loras):
    """The bot with three LoRAs configured (two for sd, one for sdxl) and the tiny SD model."""

    @asynccontextmanager
    async def start() -> AsyncIterator[Running]:
        config = dataclasses.replace(make_config(fake_discord, tiny_sd_dir, tmp_path), loras=loras)
        lora_bot_engine.models = config.model_map
        async with bot_parts(config, lora_bot_engine) as (bot, worker), running_client(bot, fake_discord):
            await fake_discord.wait_until(lambda: fake_discord.registered_commands(fake_discord.guild.id) or None)
            yield Running(fake_discord, bot, worker, config)

    return start


async def test_imagine_with_a_lora_delivers_and_the_prompt_carries_its_tag(start_lora_bot) -> None:
    async with start_lora_bot() as running:
        fake = running.fake
        handle = await fake.send_slash_command("imagine", {"prompt": "a red cube", "seed": 7, "lora": "fog"})
        final = await handle.wait_for_original(has_image, timeout=60)
        job = await delivered_job(running, int(button(final, "imagine:reroll").split(":")[2]))
        assert job.prompt == "a red cube <lora:fog:0.6>" and job.params["loras"] == [["fog", 0.6]]
        weighted = await fake.send_slash_command(
            "imagine", {"prompt": "a cube <lora:ink:0.5>", "lora": "fog", "lora_weight": 1.5}
        )
        final = await weighted.wait_for_original(has_image, timeout=60)
        job = await delivered_job(running, int(button(final, "imagine:reroll").split(":")[2]))
        assert job.params["loras"] == [["fog", 1.5], ["ink", 0.5]]


async def test_the_picker_lists_only_loras_that_fit_the_model(start_lora_bot) -> None:
    async with start_lora_bot() as running:
        fake = running.fake
        default = await fake.send_autocomplete("imagine", {"prompt": "x", "lora": ""}, focused="lora")
        choices = await default.wait_for_choices()
        assert [c["value"] for c in choices] == ["ink", "fog"]  # the default model is sd: no sdxl LoRA
        assert choices[0]["name"] == "ink — Ink wash"
        typed = await fake.send_autocomplete("imagine", {"prompt": "x", "model": "tiny", "lora": "FO"}, focused="lora")
        assert [c["value"] for c in await typed.wait_for_choices()] == ["fog"]


async def test_unknown_and_wrong_kind_loras_are_refused_to_the_user_only(start_lora_bot) -> None:
    async with start_lora_bot() as running:
        fake = running.fake
        for options, message in (
            ({"lora": "inc"}, "There is no LoRA called 'inc'. Did you mean: ink?"),
            ({"prompt": "x <lora:neon:1>"}, "'neon' is made for sdxl models, and the model 'tiny' is of kind sd"),
            ({"lora_weight": 0.5}, "`lora_weight` needs a `lora`"),
            ({"prompt": "x <lora:ink:2> <lora:fog> <lora:a> <lora:b>"}, "uses 4 LoRAs; the limit is 3 at once"),
        ):
            handle = await fake.send_slash_command("imagine", {"prompt": "x"} | options)
            callback = await handle.wait_for_callback()
            assert callback["data"]["flags"] & EPHEMERAL and message in callback["data"]["content"], options
        assert await running.store.recent_jobs() == []  # nothing stored


async def test_a_remix_reply_with_a_lora_tag_and_edit_rereads_the_tags(start_lora_bot) -> None:
    async with start_lora_bot() as running:
        fake = running.fake
        upload = await fake.post_user_message("my holiday", attachments=[("beach.png", png(), "image/png")])
        reply = await fake.post_user_message("make it winter <lora:ink:0.5> --seed 3", reply_to=int(upload["id"]))
        final = await fake.wait_for_message(lambda m: answer_to(fake, reply)(m) and has_image(m), timeout=60)
        job = await delivered_job(running, job_id_of(final))
        assert job.prompt == "make it winter <lora:ink:0.5>" and job.params["loras"] == [["ink", 0.5]]
        assert job.mode.value == "img2img"

        click = await fake.send_button_click(int(final["id"]), button(final, "imagine:edit"))
        modal = await click.wait_for_modal()
        submit = await fake.send_modal_submit(modal["custom_id"], {"prompt": "winter <lora:fog>", "negative": ""})
        edited = await submit.wait_for_original(has_image, timeout=60)
        new = await delivered_job(running, int(button(edited, "imagine:reroll").split(":")[2]))
        assert new.params["loras"] == [["fog", 0.6]]  # the old tag's LoRA is gone with it
