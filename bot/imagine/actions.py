"""What each result button does. Buttons that make images queue a job for the person who clicked."""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from PIL import Image

from bot import render
from bot.answers import answer_error, answer_unexpected, may_manage, queue_for_interaction
from bot.loras import check_lora_access, usable_loras
from bot.moderation.gate import admit, asker_from_interaction
from bot.moderation.policy import GuildPolicy, load_policy
from bot.render import NO_MENTIONS
from bot.upscale import CREATIVE_SCALE, check_flagged, creative_pass, picture_upscale, stored_picture
from generation.errors import InvalidRequest
from generation.loras import loras_for_prompt
from generation.metadata import read_parameters
from generation.outpaint import PANS, ZOOMS, pan, zoom_out
from generation.request import GenerationRequest, Mode, random_seed
from generation.upscalers import CREATIVE_STRENGTH
from jobs.limits import check_request
from storage.records import ImageRecord, JobRecord, JobStatus

if TYPE_CHECKING:
    from bot.app import ImagineBot

VARIATION_STRENGTH = 0.35  # close to the original: composition kept, details change
UPSCALE_STRENGTH = CREATIVE_STRENGTH  # Upscale (Creative)'s pass at the new size: sharpen, add detail, not repaint


async def run_action(interaction: discord.Interaction, action: str, job_id: int, index: int | None) -> None:
    """Dispatch a button click; refusals and unexpected errors are answered only to the clicker."""
    bot: ImagineBot = interaction.client  # type: ignore[assignment]
    try:
        job = await bot.services.store.get_job(job_id)
        if job is None:
            raise InvalidRequest("That job no longer exists.")
        await _ACTIONS[action](interaction, bot, job, index or 0)
    except InvalidRequest as exc:
        await answer_error(interaction, exc.user_message)
    except Exception as exc:  # else the clicker sees only "This interaction failed"
        await answer_unexpected(interaction, exc, f"button {action} on job {job_id}")


async def _source_record(bot: ImagineBot, job: JobRecord, index: int) -> ImageRecord:
    records = await bot.services.store.images_for_job(job.id)
    if job.status is not JobStatus.DONE or not records:
        raise InvalidRequest("That job has no images (any more).")
    record = next((r for r in records if r.idx == index), None)
    if record is None:
        raise InvalidRequest(f"That job has no image {index + 1}.")
    return record


async def _source_path(bot: ImagineBot, job: JobRecord, index: int) -> Path:
    return bot.services.store.image_path(await _source_record(bot, job, index))


def _at_request_size(path: Path, width: int, height: int) -> Image.Image:
    # A request's size is its model's input size: DeepFloyd IF's pictures are 4x (or 16x) the stage I size.
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    return image if image.size == (width, height) else image.resize((width, height), Image.Resampling.LANCZOS)


def _variation(path: Path, params: dict[str, Any]) -> GenerationRequest:
    """img2img of a stored image, close to it. Decodes: run it in a worker thread."""
    image = _at_request_size(path, params["width"], params["height"])
    changes = {"mode": Mode.IMG2IMG.value, "strength": VARIATION_STRENGTH, "seed": random_seed()}
    return GenerationRequest.from_params(params | changes, init_image=image)


def _upscaled(path: Path, params: dict[str, Any], seed: int) -> GenerationRequest:
    """Upscale (Creative) without an upscaler: the img2img pass over a stored image resized to twice its size.
    Decodes and resizes: run it in a thread."""
    picture, _ = stored_picture(path)
    return creative_pass(params, picture, seed, CREATIVE_SCALE, UPSCALE_STRENGTH)


def _outpainted(
    path: Path, params: dict[str, Any], action: str, seed: int, multiple: int, max_pixels: int
) -> GenerationRequest:
    """Inpainting of a grown canvas around a stored image (Zoom Out, Pan), same prompt and seed. Run in a thread."""
    image = _at_request_size(path, params["width"], params["height"])
    if action in ZOOMS:
        canvas = zoom_out(image, ZOOMS[action], multiple, max_pixels)
    else:
        canvas = pan(image, PANS[action], multiple, max_pixels)
    width, height = canvas.image.size
    changes = {"mode": Mode.INPAINT.value, "strength": 1.0, "count": 1, "width": width, "height": height}
    changes |= {"seed": seed, "keep_unmasked": True}
    return GenerationRequest.from_params(params | changes, init_image=canvas.image, mask=canvas.mask)


async def _outpaint(interaction, bot, job: JobRecord, index: int, action: str) -> None:
    services = bot.services
    family = services.catalog.family(job.model)  # refuses a model that has gone from the config
    if Mode.INPAINT not in family.modes:
        raise InvalidRequest(f"The model '{job.model}' cannot paint into a picture, so it cannot zoom out or pan.")
    record = await _source_record(bot, job, index)
    policy = await load_policy(services.store, services.config, interaction.guild_id)
    request = await asyncio.to_thread(
        _outpainted,
        services.store.image_path(record),
        job.params,
        action,
        record.seed,
        family.size_multiple,
        policy.limits.max_pixels,
    )
    await queue_for_interaction(interaction, request, source=(job.id, index), policy=policy)


async def _reroll(interaction, bot, job: JobRecord, index: int) -> None:
    request = await bot.services.store.load_request(job)
    await queue_for_interaction(interaction, request.with_changes(seed=random_seed()), source=(job.id, index))


async def _vary(interaction, bot, job: JobRecord, index: int) -> None:
    request = await asyncio.to_thread(_variation, await _source_path(bot, job, index), job.params)
    await queue_for_interaction(interaction, request, source=(job.id, index))


def _upscalable(bot: ImagineBot, job: JobRecord) -> None:
    if job.model in bot.services.catalog.upscalers:
        raise InvalidRequest("This picture is upscaled already.")


async def _subtle(interaction, bot, job: JobRecord, index: int) -> None:
    """Upscale (Subtle): the default upscaler alone, as large as the upscaler makes it within the size limit."""
    services = bot.services
    _upscalable(bot, job)
    spec = services.catalog.upscaler()  # refuses when none is set up (its button is not shown then)
    record = await _source_record(bot, job, index)
    policy = await load_policy(services.store, services.config, interaction.guild_id)
    check_flagged(record, policy, asker_from_interaction(interaction))
    path = services.store.image_path(record)
    request = await asyncio.to_thread(picture_upscale, path, spec, job, record.seed, policy.limits)
    await queue_for_interaction(interaction, request, source=(job.id, index), policy=policy)


async def _upscale(interaction, bot, job: JobRecord, index: int) -> None:
    """Upscale (Creative): the default upscaler at 2x, then the picture's own model repaints details at the new size
    (same prompt and seed, strength UPSCALE_STRENGTH); without an upscaler, that pass alone on the picture resized."""
    services = bot.services
    _upscalable(bot, job)
    record = await _source_record(bot, job, index)
    path = services.store.image_path(record)
    if not services.catalog.upscalers:
        request = await asyncio.to_thread(_upscaled, path, job.params, record.seed)
        await queue_for_interaction(interaction, request, source=(job.id, index))
        return
    spec = services.catalog.upscaler()
    policy = await load_policy(services.store, services.config, interaction.guild_id)
    check_flagged(record, policy, asker_from_interaction(interaction))
    upscale = await asyncio.to_thread(picture_upscale, path, spec, job, record.seed, policy.limits, CREATIVE_SCALE)
    assert upscale.upscale is not None and upscale.init_image is not None
    # The pass is checked now, on the picture resized, so the click is refused at once rather than after the upscale.
    picture = upscale.init_image.crop((0, 0, upscale.upscale.width, upscale.upscale.height))
    second = await asyncio.to_thread(
        creative_pass, job.params, picture, record.seed, upscale.upscale.scale, UPSCALE_STRENGTH
    )
    second = await _admitted(interaction, bot, policy, second)
    origin = {"creative": second.params()}
    await queue_for_interaction(interaction, upscale, source=(job.id, index), policy=policy, origin=origin)


async def _admitted(interaction, bot, policy: GuildPolicy, request: GenerationRequest) -> GenerationRequest:
    """Creative's second step through the gate's checks now, as the job it will be (it is queued without them)."""
    services = bot.services
    services.catalog.check(request)
    check_request(request, policy.limits)
    uses_negative = services.catalog.family(request.model).uses_negative(request)
    request, _ = admit(policy, asker_from_interaction(interaction), request, negative_applies=uses_negative)
    await check_lora_access(services, interaction.user.id, interaction.guild_id, request)
    return request


async def _edit(interaction, bot, job: JobRecord, index: int) -> None:
    await interaction.response.send_modal(EditModal(job))


async def _info(interaction, bot, job: JobRecord, index: int) -> None:
    records = await bot.services.store.images_for_job(job.id)
    if records:
        path = bot.services.store.image_path(records[0])
        parameters = await asyncio.to_thread(lambda: read_parameters(path.read_bytes()))
    else:
        parameters = None
    seeds = ", ".join(str(r.seed) for r in records) or str(job.params["seed"])
    text = (
        f"**Job {job.id}** by <@{job.user_id}> · {job.status.value} · seeds {seeds}\n"
        f"```\n{(parameters or render.safe_text(job.prompt)).replace('```', '` ` `')}\n```"
    )
    await interaction.response.send_message(text[:2000], ephemeral=True, allowed_mentions=NO_MENTIONS)


async def _delete(interaction, bot, job: JobRecord, index: int) -> None:
    if not may_manage(interaction, job):
        raise InvalidRequest("Only the person who made this image or a moderator can delete it.")
    deleted = await bot.services.store.delete_job_images(job.id)
    await interaction.response.send_message(f"Deleted {deleted} image(s).", ephemeral=True)
    if interaction.message is not None:
        with contextlib.suppress(discord.NotFound):
            await interaction.message.delete()


async def _cancel(interaction, bot, job: JobRecord, index: int) -> None:
    if not may_manage(interaction, job):
        raise InvalidRequest("Only the person who asked for this job or a moderator can cancel it.")
    if await bot.services.queue.cancel(job.id):
        await interaction.response.send_message(f"Cancelled job {job.id}.", ephemeral=True)
    else:
        raise InvalidRequest(f"Job {job.id} already finished ({job.status.value}).")


_ACTIONS = {
    "reroll": _reroll,
    "vary": _vary,
    "subtle": _subtle,
    "upscale": _upscale,
    "edit": _edit,
    "info": _info,
    "delete": _delete,
    "cancel": _cancel,
} | {action: partial(_outpaint, action=action) for action in (*ZOOMS, *PANS)}


class EditModal(discord.ui.Modal, title="Edit prompt"):
    """Prompt and negative prompt, prefilled from the job; submitting queues a new job."""

    def __init__(self, job: JobRecord) -> None:
        super().__init__()
        self.job = job
        self.prompt = discord.ui.TextInput(
            label="Prompt",
            custom_id="prompt",
            style=discord.TextStyle.paragraph,
            default=job.prompt[:2000],
            max_length=2000,
        )
        self.negative = discord.ui.TextInput(
            label="Negative prompt",
            custom_id="negative",
            style=discord.TextStyle.paragraph,
            required=False,
            default=job.negative_prompt[:1000] or None,
            max_length=1000,
        )
        self.add_item(self.prompt)
        self.add_item(self.negative)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Queue the edited request with a new seed."""
        bot: ImagineBot = interaction.client  # type: ignore[assignment]
        try:
            request = await bot.services.store.load_request(self.job)
            # The prompt holds every LoRA as a tag (generation.options adds those picked beside it): re-read them.
            known = await usable_loras(bot.services, interaction.user.id, interaction.guild_id)
            prompt, loras = loras_for_prompt(self.prompt.value, (), known)
            request = request.with_changes(
                prompt=prompt, negative_prompt=self.negative.value or "", seed=random_seed(), loras=loras
            )
            await queue_for_interaction(interaction, request, source=(self.job.id, 0))
        except InvalidRequest as exc:
            await answer_error(interaction, exc.user_message)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:  # type: ignore[override]
        """Log the unexpected and tell only this user (else they see "This interaction failed")."""
        await answer_unexpected(interaction, error, f"Edit modal of job {self.job.id}")
