"""Remix: reply to any picture with a prompt (img2img; attach a mask for inpainting), or Apps › Remix.

A reply is answered by a reply of ours that shows the queue and progress and finally the result; its
origin kind is "message", so delivery edits that message instead of using an interaction token.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.answers import answer_error, answer_unexpected, download, queue_for_interaction, read_attachment
from bot.delivery import DEFAULT_UPLOAD_LIMIT
from bot.flags import PromptFlags, parse_flags
from bot.loras import usable_loras
from bot.moderation.gate import asker_from_message, model_for, submit_job
from bot.moderation.policy import load_policy
from bot.render import NO_MENTIONS, SOMETHING_WENT_WRONG
from generation.errors import InvalidRequest
from generation.options import make_request
from generation.request import GenerationRequest
from generation.specs import LoraSpec, ModelSpec
from storage.store import Store

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)

REMIX_STRENGTH = 0.6  # keeps the composition, lets the prompt change a good deal
MODAL_TIMEOUT = 15 * 60
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
# Errors answer the person who replied (and may ping them), never anyone their text names.
ERROR_MENTIONS = discord.AllowedMentions(everyone=False, users=False, roles=False, replied_user=True)
_JOB_BUTTON = re.compile(r"^imagine:[a-z]+:(\d+)(?::\d+)?$")


@dataclass(frozen=True)
class Picture:
    """Where a message's picture is: an attachment, or an embed image behind Discord's media proxy."""

    attachment: discord.Attachment | None = None
    proxy_url: str | None = None

    async def read(self, http: discord.http.HTTPClient) -> bytes:
        """The picture's bytes, with a clear refusal when Discord will not give them to us."""
        if self.attachment is not None:
            return await read_attachment(self.attachment, "picture") or b""
        assert self.proxy_url is not None
        return await download(http.get_from_cdn(self.proxy_url), "picture")


def image_attachment(message: discord.Message) -> discord.Attachment | None:
    """The message's first attached picture (a bot's live preview does not count)."""
    for attachment in message.attachments:
        if message.author.bot and attachment.filename.startswith("preview."):
            continue
        content_type = (attachment.content_type or "").split(";")[0]
        if content_type.startswith("image/") or attachment.filename.lower().endswith(IMAGE_SUFFIXES):
            return attachment
    return None


def find_picture(message: discord.Message) -> Picture | None:
    """The picture a remix starts from: the first image attachment, else an embed's image."""
    attachment = image_attachment(message)
    if attachment is not None:
        return Picture(attachment=attachment)
    for embed in message.embeds:
        # Only through Discord's media proxy: fetching the original URL would let anyone aim us anywhere.
        if embed.image.proxy_url:
            return Picture(proxy_url=embed.image.proxy_url)
        if embed.type == "image" and embed.thumbnail.proxy_url:  # a pasted link to a picture
            return Picture(proxy_url=embed.thumbnail.proxy_url)
    return None


def job_id_on(message: discord.Message) -> int | None:
    """The job one of our result messages shows, read from its buttons' custom_ids."""
    for row in message.components:
        for item in getattr(row, "children", ()):
            match = _JOB_BUTTON.match(getattr(item, "custom_id", None) or "")
            if match:
                return int(match[1])
    return None


async def job_source(store: Store, job_id: int | None) -> tuple[int, int] | None:
    """(job, image index) to record as the remix's source, when that job is still stored."""
    if job_id is None or await store.get_job(job_id) is None:
        return None
    return (job_id, 0)


async def build_request(
    spec: ModelSpec, flags: PromptFlags, image: bytes, mask: bytes | None, loras: Mapping[str, LoraSpec]
) -> GenerationRequest:
    """img2img of `image` (inpainting with `mask`), its size following the picture unless --size says.

    `<lora:NAME:WEIGHT>` tags in the prompt pick LoRAs; `loras` (those the member may use, bot.loras) resolve
    their names and give their default weights.
    """
    if flags.strength is None:
        flags = replace(flags, strength=REMIX_STRENGTH)
    options = flags.options(image, mask)
    return await asyncio.to_thread(make_request, spec, options, loras=loras)  # decoding stays off the loop


class RemixModal(discord.ui.Modal, title="Remix"):
    """Prompt (flags allowed) and strength for a remix of a picture chosen with Apps › Remix."""

    def __init__(self, picture: Picture, job_id: int | None) -> None:
        super().__init__(timeout=MODAL_TIMEOUT)
        self.picture = picture
        self.job_id = job_id
        self.prompt = discord.ui.TextInput(
            label="Prompt",
            custom_id="remix:prompt",
            style=discord.TextStyle.paragraph,
            placeholder="What it should become (--no, --seed, --size … work too)",
            max_length=2000,
        )
        self.strength = discord.ui.TextInput(
            label="Strength: 0.05 (a little) to 1 (all new)",
            custom_id="remix:strength",
            required=False,
            placeholder=f"{REMIX_STRENGTH:g}",
            max_length=10,
        )
        self.add_item(self.prompt)
        self.add_item(self.strength)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Check the fields, download the picture, queue the job on this interaction."""
        bot: ImagineBot = interaction.client  # type: ignore[assignment]
        try:
            flags = parse_flags(self.prompt.value)
            if self.strength.value.strip():
                flags = replace(flags, strength=_strength(self.strength.value))
            services = bot.services
            policy = await load_policy(services.store, services.config, interaction.guild_id)  # once per remix
            spec = model_for(services.catalog, policy, flags.model)
            await interaction.response.defer(thinking=True)  # downloading may take longer than 3 s
            known = await usable_loras(services, interaction.user.id, interaction.guild_id)
            request = await build_request(spec, flags, await self.picture.read(bot.http), None, known)
            source = await job_source(services.store, self.job_id)
            await queue_for_interaction(interaction, request, source=source, policy=policy)
        except InvalidRequest as exc:
            await answer_error(interaction, exc.user_message)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:  # type: ignore[override]
        """Log the unexpected and tell only this user."""
        await answer_unexpected(interaction, error, "Remix modal")


def _strength(text: str) -> float:
    try:
        return float(text.strip().replace(",", "."))
    except ValueError:
        raise InvalidRequest(
            f"Strength must be a number from 0.05 to 1, such as {REMIX_STRENGTH:g}, not '{render.safe_text(text, 20)}'."
        ) from None


class RemixCog(commands.Cog):
    """Remix any picture: reply to it with a prompt, or use Apps › Remix on it."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Remix", callback=self.remix_menu)

    async def cog_load(self) -> None:
        """Context menus cannot be declared in a cog class; register ours by hand."""
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        """Take the context menu away with the cog."""
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def remix_menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Apps › Remix on a message: ask for a prompt, then remix its picture."""
        picture = find_picture(message)
        if picture is None:
            await answer_error(
                interaction, "That message has no picture to remix: use Remix on a message with an image."
            )
            return
        await interaction.response.send_modal(RemixModal(picture, job_id_on(message)))

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """A text reply to a message with a picture remixes that picture."""
        if message.author.bot or message.type is not discord.MessageType.reply or message.reference is None:
            return
        text = self._without_own_mention(message.content).strip()
        if not text:
            return
        target = await self._replied_to(message)
        picture = find_picture(target) if target is not None else None
        if target is None or picture is None:
            return
        try:
            await self._remix_reply(message, target, picture, text)
        except InvalidRequest as exc:
            await self._answer_error(message, exc.user_message)
        except Exception:
            log.exception("remix of message %d failed", message.id)
            await self._answer_error(message, SOMETHING_WENT_WRONG)

    async def _remix_reply(
        self, message: discord.Message, target: discord.Message, picture: Picture, text: str
    ) -> None:
        services = self.bot.services
        flags = parse_flags(text)
        guild_id = message.guild.id if message.guild else None
        policy = await load_policy(services.store, services.config, guild_id)  # read once for this remix
        spec = model_for(services.catalog, policy, flags.model)
        image = await picture.read(self.bot.http)
        mask = await read_attachment(image_attachment(message), "mask")
        known = await usable_loras(services, message.author.id, guild_id)
        request = await build_request(spec, flags, image, mask, known)
        source = await job_source(services.store, job_id_on(target) if target.author.id == self.bot.user.id else None)
        guild = message.guild
        origin = {
            "kind": "message",
            "channel_id": message.channel.id,
            "reply_to": message.id,
            "upload_limit": guild.filesize_limit if guild else DEFAULT_UPLOAD_LIMIT,
        }
        # The same door as every interaction: the server's policy, then the queue's limits.
        asker = asker_from_message(message)
        ticket = await submit_job(services, asker, request, origin=origin, source=source, policy=policy)

        async def send(content: str, view: discord.ui.View | None) -> int:
            reply = await message.channel.send(
                content,
                view=view or discord.utils.MISSING,
                reference=message.to_reference(fail_if_not_exists=False),
                mention_author=False,
                allowed_mentions=NO_MENTIONS,
            )
            return reply.id

        try:
            await self.bot.delivery.acknowledge(ticket, send)
        except discord.HTTPException as exc:
            # Nobody would see this job's progress or result: do not spend the GPU on it.
            log.warning("remix: could not answer message %d (%s); cancelling job %d", message.id, exc, ticket.job.id)
            await services.queue.cancel(ticket.job.id)

    async def _replied_to(self, message: discord.Message) -> discord.Message | None:
        reference = message.reference
        assert reference is not None
        if isinstance(reference.resolved, discord.Message):
            return reference.resolved
        if isinstance(reference.resolved, discord.DeletedReferencedMessage) or reference.message_id is None:
            return None
        if reference.cached_message is not None:
            return reference.cached_message
        try:
            return await message.channel.fetch_message(reference.message_id)
        except discord.HTTPException:
            return None  # deleted, or a channel we may not read

    def _without_own_mention(self, text: str) -> str:
        me = self.bot.user
        return re.sub(rf"<@!?{me.id}>", " ", text) if me is not None else text

    async def _answer_error(self, message: discord.Message, text: str) -> None:
        try:
            await message.reply(f"⚠️ {text}", mention_author=True, allowed_mentions=ERROR_MENTIONS)
        except discord.HTTPException as exc:
            log.warning("remix: could not tell message %d's author about %r: %s", message.id, text, exc)


async def setup(bot: ImagineBot) -> None:
    """Extension entry point."""
    await bot.add_cog(RemixCog(bot))
