"""Upscaling through the loopback Discord: /upscale, the Upscale (Subtle) / (Creative) buttons, the refusals, and
Creative's second step across a restart.

"Direct" is the upscaler called as `imagine-bot upscale` calls it (generation.upscalers.load_upscaler), on the same
picture: what the bot delivers equals it pixel for pixel (PNG is lossless).
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bot.runner import bot_parts
from bot.upscale import creative_pass
from generation.engine import Engine
from generation.families.upscaling import upscale_request
from generation.metadata import read_parameters, upscale_parameters
from generation.request import GenerationRequest
from generation.results import GeneratedImage
from generation.specs import UpscalerSpec
from generation.tiny.upscaler import write_tiny_upscaler
from generation.upscalers import load_upscaler
from storage.records import JobStatus
from storage.store import Store
from tests.bot.conftest import Running, button, custom_ids, decode, delivered_job, has_image, make_config
from tests.fake_discord import FakeDiscord, running_client

EPHEMERAL = 64


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_upscaler(tmp_path_factory.mktemp("upscalers") / "x4.safetensors")


@pytest.fixture
def start_upscale_bot(fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, bot_engine: Engine, network):
    """`async with start_upscale_bot(**limits) as running:` — the tiny model and, unless `upscalers=()`, the tiny
    Real-ESRGAN Compact network as the default upscaler `x4`."""

    @asynccontextmanager
    async def start(data: Path | None = None, upscalers: tuple | None = None, **limits) -> AsyncIterator[Running]:
        config = make_config(fake_discord, tiny_sd_dir, data or tmp_path, **limits)
        if upscalers is None:
            upscalers = (UpscalerSpec(name="x4", source=str(network), description="tiny Real-ESRGAN"),)
        config = replace(config, upscalers=upscalers)
        bot_engine.models = config.model_map
        async with bot_parts(config, bot_engine) as (bot, worker), running_client(bot, fake_discord):
            await fake_discord.wait_until(lambda: fake_discord.registered_commands(fake_discord.guild.id) or None)
            yield Running(fake_discord, bot, worker, config)

    return start


def direct(network: Path, picture: Image.Image, scale: int | None = None) -> np.ndarray:
    upscaler = load_upscaler(UpscalerSpec(name="x4", source=str(network)), torch.device("cpu"), torch.float32)
    return np.asarray(upscaler.upscale(picture, scale=scale))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def noise_picture(seed: int = 0, size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def noise_png(size: tuple[int, int], seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    noise_picture(seed, size).save(buffer, format="PNG")
    return buffer.getvalue()


def job_of(message: dict) -> int:
    return int(button(message, "imagine:info").split(":")[2])


def labels(message: dict) -> list[list[str]]:
    """Each row's buttons as shown: emoji, then label."""
    return [
        [" ".join(filter(None, ((c.get("emoji") or {}).get("name"), c.get("label")))) for c in row["components"]]
        for row in message["components"]
    ]


async def upscale(fake: FakeDiscord, data: bytes, filename: str = "photo.png", user=None, **options):
    attachments = {"image": (filename, data, "image/png")}
    return await fake.send_slash_command("upscale", options, attachments=attachments, user=user)


async def refusal(handle) -> dict:
    """The ephemeral answer, before or after the public "thinking…" (which is then deleted)."""
    message = await handle.wait_for_message(lambda m: "⚠️" in m["content"])
    assert message["flags"] & EPHEMERAL and handle.original is None
    return message


async def test_upscale_command_delivers_the_picture_scale_times_larger(start_upscale_bot, network: Path) -> None:
    source = noise_png((64, 48))
    async with start_upscale_bot() as running:
        fake = running.fake
        handle = await upscale(fake, source)
        assert "Queued" in (await handle.wait_for_original(lambda m: "Queued" in m["content"]))["content"]
        final = await handle.wait_for_original(has_image, timeout=60)
        image = decode(fake, final["attachments"][0])
        assert image.size == (256, 192)
        assert np.array_equal(pixels(image), direct(network, Image.open(io.BytesIO(source))))
        assert "**photo.png**" in final["content"] and "upscaled 4x to 256x192 · x4" in final["content"]
        assert {c.split(":")[1] for c in custom_ids(final)} == {"info", "delete"}
        data = fake.attachment_bytes(final["attachments"][0])
        assert read_parameters(data) == "Postprocess upscale by: 4, Postprocess upscaler: x4, Size: 256x192"

        half = await (await upscale(fake, source, scale=2)).wait_for_original(has_image, timeout=60)
        smaller = decode(fake, half["attachments"][0])
        assert smaller.size == (128, 96)  # the network's 4x, resized down, as the CLI does
        assert np.array_equal(pixels(smaller), direct(network, Image.open(io.BytesIO(source)), 2))

        choices = await fake.send_autocomplete("upscale", {"upscaler": "x"}, focused="upscaler")
        assert [(c["name"], c["value"]) for c in await choices.wait_for_choices()] == [("x4 — tiny Real-ESRGAN", "x4")]
        models = await fake.send_autocomplete("imagine", {"prompt": "x", "model": ""}, focused="model")
        assert [c["value"] for c in await models.wait_for_choices()] == ["tiny"]  # no upscaler to draw with
        refused = await fake.send_slash_command("imagine", {"prompt": "a cat", "model": "x4"})
        text = (await refused.wait_for_callback())["data"]["content"]
        assert "'x4' is an upscaler, not a model that draws: use it with /upscale" in text


async def test_refusals_are_ephemeral_and_store_nothing(start_upscale_bot) -> None:
    picture = noise_png((64, 48))
    async with start_upscale_bot(max_upscaled_pixels=128 * 96) as running:
        fake, store = running.fake, running.store
        text = await refusal(await upscale(fake, b"just some notes", "notes.txt"))
        assert "The image (notes.txt) is not a picture we can read: send PNG, JPEG" in text["content"]
        over = await refusal(await upscale(fake, picture, scale=4))
        assert "Upscaling 64x48 4x would make 256x192 (49,152 pixels), over the limit of 12,288" in over["content"]
        too_large = await refusal(await upscale(fake, picture, scale=8))
        assert (
            "The upscaler 'x4' enlarges up to 4x, so a scale of 8 is not possible: pick 1 to 4." in too_large["content"]
        )
        unknown = await (await upscale(fake, picture, upscaler="nope")).wait_for_callback()
        assert unknown["data"]["flags"] & EPHEMERAL
        assert "There is no upscaler called 'nope'. Choose one of: x4." in unknown["data"]["content"]
        await store.set_guild_setting(fake.guild.id, "blocked_users", [fake.member.id], by_user=fake.owner.id)
        blocked = await (await upscale(fake, picture)).wait_for_callback()
        assert blocked["data"]["flags"] & EPHEMERAL and "blocked you from making images" in blocked["data"]["content"]
        assert await store.recent_jobs() == []

        fitted = await (await upscale(fake, picture, user=fake.other_member)).wait_for_original(has_image, timeout=60)
        assert decode(fake, fitted["attachments"][0]).size == (128, 96)  # no scale given: the largest that fits
    async with start_upscale_bot(upscalers=()) as running:
        none = await (await upscale(running.fake, picture)).wait_for_callback()
        assert none["data"]["flags"] & EPHEMERAL
        assert "No upscaler is set up on this bot" in none["data"]["content"]


async def test_a_2048_square_result_is_sent_within_the_upload_limit(start_upscale_bot) -> None:
    async with start_upscale_bot() as running:
        fake = running.fake
        final = await (await upscale(fake, noise_png((512, 512)))).wait_for_original(has_image, timeout=120)
        (attachment,) = final["attachments"]
        job = await delivered_job(running, job_of(final))
        (record,) = await running.store.images_for_job(job.id)
        assert (record.width, record.height) == (2048, 2048) and record.size_bytes > 10 * 2**20  # the PNG is kept
        assert attachment["filename"].endswith(".jpg") and len(fake.attachment_bytes(attachment)) <= 10 * 2**20
        assert decode(fake, attachment).size == (2048, 2048)


async def make_result(running, **options) -> dict:
    handle = await running.fake.send_slash_command("imagine", {"prompt": "a lighthouse", "seed": 5} | options)
    return await handle.wait_for_original(has_image, timeout=60)


async def test_subtle_and_creative_on_a_result(start_upscale_bot, network: Path) -> None:
    async with start_upscale_bot() as running:
        fake, store = running.fake, running.store
        result = await make_result(running)
        source_job = job_of(result)
        assert labels(result)[0] == ["Upscale (Subtle)", "✨ Upscale (Creative)", "Vary", "🔄 Reroll", "✏️ Edit"]
        source = decode(fake, result["attachments"][0])
        original = read_parameters(fake.attachment_bytes(result["attachments"][0]))

        subtle = await fake.send_button_click(
            int(result["id"]), button(result, "imagine:subtle"), user=fake.other_member
        )
        assert "Queued" in (await subtle.wait_for_callback())["data"]["content"]
        upscaled = await subtle.wait_for_original(has_image, timeout=60)
        image = decode(fake, upscaled["attachments"][0])
        assert image.size == (256, 256) and np.array_equal(pixels(image), direct(network, source))
        job = await store.get_job(job_of(upscaled))
        assert (job.model, job.user_id, job.source_job_id) == ("x4", fake.other_member.id, source_job)
        data = fake.attachment_bytes(upscaled["attachments"][0])
        assert read_parameters(data) == upscale_parameters(original, "x4", 4, (256, 256))
        assert "a lighthouse" in read_parameters(data) and "Seed: 5" in read_parameters(data)

        finals = []
        for _ in range(2):  # the same picture and seed: the same result
            creative = await fake.send_button_click(int(result["id"]), button(result, "imagine:upscale"))
            finals.append(await creative.wait_for_original(has_image, timeout=60))
        first, second = (pixels(decode(fake, final["attachments"][0])) for final in finals)
        assert first.shape == (128, 128, 3) and np.array_equal(first, second)
        passed = await delivered_job(running, job_of(finals[0]))
        assert (passed.model, passed.mode.value, passed.params["strength"], passed.params["seed"]) == (
            "tiny",
            "img2img",
            0.3,
            5,
        )
        upscale_job = await store.get_job(passed.source_job_id)
        assert upscale_job.model == "x4" and upscale_job.source_job_id == source_job
        assert upscale_job.delivered_where == f"creative:{passed.id}" and upscale_job.status is JobStatus.DONE
        (step_one,) = await store.images_for_job(upscale_job.id)
        upscaled_2x = pixels(Image.open(store.image_path(step_one)))
        assert np.array_equal(upscaled_2x, direct(network, source, 2))  # the upscaler first …
        assert np.abs(first.astype(int) - upscaled_2x).mean() > 1  # … then the img2img pass repainted it

        await store.set_guild_setting(fake.guild.id, "blocked_users", [fake.member.id], by_user=fake.owner.id)
        for action in ("imagine:subtle", "imagine:upscale"):  # every button passes the same gate
            click = await fake.send_button_click(int(result["id"]), button(result, action))
            data = (await click.wait_for_callback())["data"]
            assert data["flags"] & EPHEMERAL and "blocked you from making images" in data["content"], action


async def test_u_buttons_on_a_grid_upscale_their_own_picture(start_upscale_bot, network: Path) -> None:
    async with start_upscale_bot() as running:
        fake = running.fake
        grid = await make_result(running, count=4, seed=1)
        rows = labels(grid)
        assert rows[:3] == [["U1", "U2", "U3", "U4"], ["✨ U1", "✨ U2", "✨ U3", "✨ U4"], ["V1", "V2", "V3", "V4"]]
        assert len(rows) <= 5 and all(len(row) <= 5 for row in rows)
        sheet = decode(fake, grid["attachments"][0])
        third, first = sheet.crop((0, 64, 64, 128)), sheet.crop((0, 0, 64, 64))  # a 2x2 grid, row by row
        assert not np.array_equal(pixels(third), pixels(first))
        job = job_of(grid)
        click = await fake.send_button_click(int(grid["id"]), f"imagine:subtle:{job}:2")
        image = decode(fake, (await click.wait_for_original(has_image, timeout=60))["attachments"][0])
        assert np.array_equal(pixels(image), direct(network, third))

        creative = await fake.send_button_click(int(grid["id"]), f"imagine:upscale:{job}:2")
        final = await creative.wait_for_original(has_image, timeout=60)
        passed = await delivered_job(running, job_of(final))
        assert passed.params["seed"] == 3 and passed.params["width"] == 128  # picture 3's own seed, at 2x


async def left_done(
    store: Store, fake, network_file: Path, seed: int, model: str = "tiny"
) -> tuple[int, GenerationRequest]:
    """An upscale job of a Creative click, done and stored, as a restart right after it finished leaves it."""
    made = GenerationRequest(prompt="a red cube", model=model, width=64, height=64, steps=4, guidance=7.0, seed=seed)
    spec = UpscalerSpec(name="x4", source=str(network_file))
    upscale = upscale_request(spec, noise_picture(seed), scale=2, prompt="a red cube", seed=seed)
    second = creative_pass(made.params(), noise_picture(seed), seed, 2, 0.3)
    origin = {"kind": "message", "channel_id": fake.channel.id, "responded": True, "creative": second.params()}
    job = await store.create_job(
        upscale, user_id=fake.member.id, guild_id=fake.guild.id, channel_id=fake.channel.id, origin=origin
    )
    await store.mark_running([job.id])
    upscaled = noise_picture(seed).resize((128, 128))
    await store.finish_job(job.id, [GeneratedImage(image=upscaled, seed=seed, index=0, parameters="x")])
    return job.id, second


async def test_a_restart_between_the_two_steps_loses_nothing_and_repeats_nothing(
    start_upscale_bot, network: Path, fake_discord, tmp_path: Path
) -> None:
    fake = fake_discord
    async with await Store.open(tmp_path / "imagine.sqlite3", tmp_path / "images") as store:
        pending, second = await left_done(store, fake, network, seed=3)
        queued, other = await left_done(store, fake, network, seed=4)
        follow_up = await store.create_job(  # its pass was queued, but the upscale not yet marked as done with
            other.with_changes(init_image=noise_picture(4).resize((128, 128))),
            user_id=fake.member.id,
            guild_id=fake.guild.id,
            channel_id=fake.channel.id,
            origin={"kind": "message", "channel_id": fake.channel.id, "responded": True, "creative_of": queued},
        )
        orphan, _ = await left_done(store, fake, network, seed=5, model="gone")  # its model left the config
    async with start_upscale_bot(tmp_path) as running:
        store = running.store

        def posted() -> list[dict] | None:
            shown = [m for m in fake.messages(fake.channel.id) if has_image(m)]
            return shown if len(shown) == 3 else None

        shown = await fake.wait_until(posted, timeout=60)
        jobs = {job.id: job for job in await store.recent_jobs()}
        assert len(jobs) == 5  # three upscales, the pass queued before, and one pass queued at this start
        (made,) = [job for job in jobs.values() if (job.origin or {}).get("creative_of") == pending]
        assert made.params == second.params() and made.source_job_id == pending
        assert jobs[pending].delivered_where == f"creative:{made.id}"
        assert jobs[queued].delivered_where == f"creative:{follow_up.id}"
        # No pass possible: the upscaled picture itself is delivered, with its buttons.
        orphan_job = await delivered_job(running, orphan)
        assert orphan_job.delivered_where.startswith("channel:") and orphan_job.origin["creative"] is None
        assert sorted(decode(fake, m["attachments"][0]).size for m in shown) == [(128, 128)] * 3
    async with start_upscale_bot(tmp_path) as running:
        assert len(await running.store.recent_jobs()) == 5  # nothing queued twice
