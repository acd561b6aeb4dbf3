"""Upscaling on Discord: /upscale for any picture, the pieces the Upscale buttons share, and Creative's second step.

An upscale is a job of the fair queue on an upscaler's name (generation.families.upscaling). "Upscale (Creative)"
is two jobs: the upscale, whose origin records the img2img pass to run on its result (`creative`), then that
pass, queued by CreativeChain as soon as the upscale is done. Delivery shows only the second one's picture, in
the same message. The chain is durable: an upscale left done with its pass not queued (a restart in between) is
found among the undelivered jobs at the next start, and a pass already queued is found and not queued twice.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands
from PIL import Image

from bot.answers import answer_error, answer_unexpected, queue_for_interaction, read_attachment
from bot.moderation.gate import Asker, asker_from_interaction
from bot.moderation.nsfw import Verdict, previews_allowed, verdict
from bot.moderation.policy import GuildPolicy, load_policy
from bot.moderation.settings import DEFAULT_NSFW
from bot.services import Services
from generation.errors import InvalidRequest, UserFacingError
from generation.families.upscaling import scale_for, upscale_request
from generation.images import decode_image, to_rgb
from generation.metadata import own_prompt, read_parameters
from generation.request import MAX_UPSCALE, GenerationRequest, Mode
from generation.specs import UpscalerSpec
from jobs.events import JobDone
from jobs.limits import Limits
from jobs.queue import Requester
from storage.records import ImageRecord, JobRecord, JobStatus

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)

CREATIVE_SCALE = 2  # Upscale (Creative) enlarges 2x, as the img2img pass at twice the size did before upscalers
CHAIN_SCAN_PAGE = 25


def fitting_scale(
    spec: UpscalerSpec, width: int, height: int, limits: Limits, asked: int | None = None, most: int | None = None
) -> int:
    """`asked` (refused past the network's factor), else the upscaler's own factor (at most `most`), lowered until
    the result fits `max_upscaled_pixels`; never below 2, where the queue refuses naming the limit.

    Reads the network's file the first time: call it off the event loop.
    """
    if asked is not None:
        return scale_for(spec, asked)
    target = scale_for(spec) if most is None else min(most, scale_for(spec))
    for scale in range(target, 1, -1):
        if width * scale * height * scale <= limits.max_upscaled_pixels:
            return scale
    return min(target, 2)


def stored_picture(path: Path) -> tuple[Image.Image, str | None]:
    """A stored result as RGB and its A1111 parameters. Decodes: run it in a worker thread."""
    data = path.read_bytes()
    with Image.open(path) as opened:
        picture = opened.convert("RGB")
    return picture, read_parameters(data)


def check_flagged(record: ImageRecord, policy: GuildPolicy, asker: Asker) -> None:
    """Refuse upscaling a picture flagged as NSFW unless flagged pictures are shown as they are here: an upscaler
    has no safety checker, so its result would go out unflagged."""
    if record.nsfw and verdict(policy.nsfw, asker.channel_nsfw, True) is not Verdict.SHOW:
        raise InvalidRequest(
            "This picture was flagged as NSFW, and an upscaler has no safety checker to flag its upscale, so it is "
            f"not upscaled here (this server's `nsfw`: {policy.nsfw})."
        )


def picture_upscale(
    path: Path, spec: UpscalerSpec, job: JobRecord, seed: int, limits: Limits, most: int | None = None
) -> GenerationRequest:
    """The upscale of a stored picture of `job`, titled by its prompt (its parameters and seed steer sd-x4).
    Decodes: run it in a worker thread."""
    picture, parameters = stored_picture(path)
    scale = fitting_scale(spec, picture.width, picture.height, limits, most=most)
    return upscale_request(spec, picture, scale=scale, prompt=job.prompt, seed=seed, parameters=parameters)


def at_size(picture: Image.Image, width: int, height: int) -> Image.Image:
    """A picture at a request's size (DeepFloyd IF's requests are a quarter of its pictures)."""
    return picture if picture.size == (width, height) else picture.resize((width, height), Image.Resampling.LANCZOS)


def creative_pass(
    params: dict[str, Any], picture: Image.Image, seed: int, scale: int, strength: float
) -> GenerationRequest:
    """The img2img pass of a picture's own model, `scale` times its request size, same prompt and seed."""
    width, height = params["width"] * scale, params["height"] * scale
    changes = {"mode": Mode.IMG2IMG.value, "strength": strength, "count": 1, "width": width, "height": height}
    changes |= {"seed": seed, "keep_unmasked": False, "upscale": None}
    return GenerationRequest.from_params(params | changes, init_image=at_size(picture, width, height))


def _attachment_request(
    spec: UpscalerSpec, data: bytes, what: str, filename: str, asked: int | None, limits: Limits
) -> GenerationRequest:
    """The upscale of an uploaded picture: decoded safely, titled by its own prompt (or its file name)."""
    picture = to_rgb(decode_image(data, what))
    parameters = read_parameters(data) if data.startswith(b"\x89PNG") else None
    scale = fitting_scale(spec, picture.width, picture.height, limits, asked=asked)
    return upscale_request(
        spec,
        picture,
        scale=scale,
        prompt=own_prompt(parameters)[0] or filename,
        seed=0,  # as `imagine-bot upscale`: the same picture gives the same upscale
        parameters=parameters,
    )


class CreativeChain:
    """Queues Upscale (Creative)'s img2img pass when its upscale is done (`creative` in the upscale's origin)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._subscription = services.queue.bus.subscribe()  # from construction: no JobDone is missed after it
        self._lock = asyncio.Lock()  # the event and the start-up scan may meet on one job: one at a time
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Queue the passes a restart left behind, then follow job events."""
        self._task = asyncio.create_task(self._run(), name="creative-chain")
        for job in await self.services.store.undelivered_jobs():
            if job.status is JobStatus.DONE and (job.origin or {}).get("creative"):
                await self.chain(job.id)

    async def stop(self) -> None:
        """Stop following events; a pass not queued yet is found again at the next start."""
        self._subscription.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        async for event in self._subscription:
            if isinstance(event, JobDone):
                try:
                    await self.chain(event.job_id)
                except Exception:  # never dies: the job stays undelivered and is tried again at the next start
                    log.exception("creative: could not queue the img2img pass after job %d", event.job_id)

    async def chain(self, job_id: int) -> None:
        """Queue the pass after an upscale job that is done, once; it then counts as delivered."""
        store = self.services.store
        async with self._lock:
            job = await store.get_job(job_id)
            if job is None or job.status is not JobStatus.DONE or job.delivered_at is not None:
                return
            creative = (job.origin or {}).get("creative")
            if not creative:
                return
            follow_up = await self._queued_already(job)
            if follow_up is None:
                follow_up = await self._queue_pass(job, creative)
            if follow_up is not None:
                await store.mark_delivered(job.id, f"creative:{follow_up}")

    async def _queued_already(self, job: JobRecord) -> int | None:
        """The pass queued for this upscale before a restart, if it was: among its requester's later jobs."""
        offset = 0
        while True:
            page = await self.services.store.jobs_by_user(job.user_id, limit=CHAIN_SCAN_PAGE, offset=offset)
            for later in page:
                if later.id <= job.id:
                    return None
                if (later.origin or {}).get("creative_of") == job.id:
                    return later.id
            if len(page) < CHAIN_SCAN_PAGE:
                return None
            offset += CHAIN_SCAN_PAGE

    async def _queue_pass(self, job: JobRecord, creative: dict[str, Any]) -> int | None:
        services, store = self.services, self.services.store
        records = await store.images_for_job(job.id)
        try:
            if not records:
                raise InvalidRequest("The upscaled picture is gone.")
            picture, _ = await asyncio.to_thread(stored_picture, store.image_path(records[0]))
            request = await asyncio.to_thread(
                GenerationRequest.from_params,
                creative,
                at_size(picture, creative["width"], creative["height"]),
            )
            origin = {key: value for key, value in (job.origin or {}).items() if key != "creative"}
            checked = services.safety_checks(request.model)
            previews = previews_allowed(origin.get("nsfw", DEFAULT_NSFW), bool(origin.get("channel_nsfw")), checked)
            # "responded": the upscale's message was answered before its job could run; the pass edits it.
            origin |= {"creative_of": job.id, "responded": True, "previews": previews}
            requester = Requester(job.user_id, job.guild_id, job.channel_id, job.weight)
            # Admitted with the upscale (the server's rules and limits, checked at the click): no second refusal.
            ticket = await services.queue.submit(
                request, requester, origin=origin, source=(job.id, 0), limits=Limits.unlimited()
            )
        except UserFacingError as exc:  # e.g. its model left the config: the upscaled picture is shown instead
            log.warning("creative: no img2img pass after job %d (%s); delivering the upscale", job.id, exc)
            await store.update_origin(job.id, {"creative": None})
            services.queue.bus.publish(JobDone(job.id, tuple(records)))
            return None
        return ticket.job.id


class UpscaleCog(commands.Cog):
    """Enlarge any picture."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.chain = CreativeChain(bot.services)

    async def cog_load(self) -> None:
        """Start Creative's chain (and queue what a restart left behind)."""
        await self.chain.start()

    async def cog_unload(self) -> None:
        """Stop Creative's chain."""
        await self.chain.stop()

    @app_commands.command(name="upscale")
    @app_commands.describe(
        image="The picture to enlarge: PNG, JPEG, WebP, GIF or AVIF",
        scale="How many times larger, at most the upscaler's own (default: its own, within the size limit)",
        upscaler="Which upscaler (default: the bot's)",
    )
    async def upscale(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        scale: app_commands.Range[int, 1, MAX_UPSCALE] | None = None,
        upscaler: str | None = None,
    ) -> None:
        """Enlarge a picture with an upscaler"""
        services = self.bot.services
        try:
            spec = services.catalog.upscaler(upscaler)  # none set up, or an unknown name: refused at once
            policy = await load_policy(services.store, services.config, interaction.guild_id)
            asker = asker_from_interaction(interaction)
            policy.check_access(asker.user_id, asker.places, asker.role_ids)  # before downloading anything
            await interaction.response.defer(thinking=True)  # downloading and decoding may take over 3 s
            what = f"image ({image.filename})"
            data = await read_attachment(image, what)  # refuses an oversized file before downloading it
            request = await asyncio.to_thread(
                _attachment_request, spec, data or b"", what, image.filename, scale, policy.limits
            )
            await queue_for_interaction(interaction, request, policy=policy)
        except UserFacingError as exc:
            await answer_error(interaction, exc.user_message)
        except Exception as exc:
            await answer_unexpected(interaction, exc, "command /upscale")

    @upscale.autocomplete("upscaler")
    async def _upscalers(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        upscalers = self.bot.services.catalog.upscalers.values()
        return [
            app_commands.Choice(name=f"{u.name} — {u.description}"[:100] if u.description else u.name, value=u.name)
            for u in upscalers
            if current.casefold() in u.name.casefold()
        ][:25]


async def setup(bot: ImagineBot) -> None:
    """Extension entry point."""
    await bot.add_cog(UpscaleCog(bot))
