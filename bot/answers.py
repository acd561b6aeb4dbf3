"""Answering interactions: refusals, unexpected errors, and queueing a job on someone's behalf."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import aiohttp
import discord

from bot.moderation.gate import asker_from_interaction, submit_job
from bot.moderation.policy import GuildPolicy
from bot.render import NO_MENTIONS, SOMETHING_WENT_WRONG
from generation.errors import InvalidRequest
from generation.images import DEFAULT_LIMITS
from generation.request import GenerationRequest
from storage.records import JobRecord

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)
DOWNLOAD_TIMEOUT = 30.0  # seconds; a CDN that stalls must not leave the user waiting on "thinking…"


async def answer_error(interaction: discord.Interaction, text: str) -> None:
    """Tell only this user what went wrong.

    After a public "thinking…" deferral the refusal would show to everyone in its place, so that message
    is deleted and the refusal comes as an ephemeral follow-up instead.
    """
    text = f"⚠️ {text}"
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
    elif interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
    else:
        await interaction.edit_original_response(content=text, attachments=[], view=None, allowed_mentions=NO_MENTIONS)


async def answer_unexpected(interaction: discord.Interaction, error: BaseException, what: str) -> None:
    """Log an error that is not the user's doing, with its traceback, and tell only this user it happened."""
    log.error("%s failed", what, exc_info=error)
    try:
        if interaction.response.is_done() and (
            interaction.response.type is not discord.InteractionResponseType.deferred_channel_message
        ):
            # The message already shown (e.g. "Queued") stays: it may be true. Say it beside it.
            await interaction.followup.send(f"⚠️ {SOMETHING_WENT_WRONG}", ephemeral=True, allowed_mentions=NO_MENTIONS)
        else:
            await answer_error(interaction, SOMETHING_WENT_WRONG)
    except discord.HTTPException as exc:  # the interaction may be out of reach (expired, deleted)
        log.warning("could not tell the user that %s failed: %s", what, exc)


async def read_attachment(attachment: discord.Attachment | None, what: str) -> bytes | None:
    """An attachment's bytes, refusing oversized files before downloading them."""
    if attachment is None:
        return None
    if attachment.size > DEFAULT_LIMITS.max_bytes:
        raise InvalidRequest(
            f"The {what} is {attachment.size / 2**20:.1f} MB; the limit is {DEFAULT_LIMITS.max_bytes / 2**20:.0f} MB."
        )
    return await download(attachment.read(), what)


async def download(fetch: Awaitable[bytes], what: str) -> bytes:
    """Bytes from Discord's CDN within DOWNLOAD_TIMEOUT, or a refusal saying what went wrong."""
    try:
        async with asyncio.timeout(DOWNLOAD_TIMEOUT):
            return await fetch
    except TimeoutError:
        raise InvalidRequest(
            f"Downloading the {what} from Discord took over {DOWNLOAD_TIMEOUT:g} s; try again."
        ) from None
    except discord.HTTPException as exc:
        raise InvalidRequest(f"Could not download the {what} from Discord ({exc.status}); try again.") from exc
    except aiohttp.ClientError as exc:
        raise InvalidRequest(f"Could not download the {what} from Discord; try again.") from exc


def is_moderator(interaction: discord.Interaction) -> bool:
    """Members who can manage the server (or its messages) may act on anyone's jobs there."""
    permissions = interaction.permissions
    return interaction.guild_id is not None and (permissions.manage_guild or permissions.manage_messages)


def may_manage(interaction: discord.Interaction, job: JobRecord) -> bool:
    """The requester, or a moderator of the server the job was made in, may delete or cancel it."""
    return interaction.user.id == job.user_id or (is_moderator(interaction) and job.guild_id == interaction.guild_id)


def interaction_origin(interaction: discord.Interaction) -> dict:
    """What delivery needs to reach this user later, stored with the job."""
    return {
        "kind": "interaction",
        "application_id": interaction.application_id,
        "token": interaction.token,
        "created_at": interaction.created_at.timestamp(),
        "channel_id": interaction.channel_id,
        "upload_limit": interaction.filesize_limit,
    }


async def queue_for_interaction(
    interaction: discord.Interaction,
    request: GenerationRequest,
    *,
    source: tuple[int, int] | None = None,
    policy: GuildPolicy | None = None,
    origin: dict | None = None,
) -> None:
    """Queue a job for whoever triggered the interaction and answer with its place in line.

    `policy`: the server's, when the caller has read it already (to pick the model); else it is read here.
    `origin`: more for the job's stored origin (Upscale (Creative) records its second step there).
    """
    bot: ImagineBot = interaction.client  # type: ignore[assignment]
    # Through the server's policy (channels, roles, blocks, banned words, DMs), then the queue's limits.
    ticket = await submit_job(
        bot.services,
        asker_from_interaction(interaction),
        request,
        origin=interaction_origin(interaction) | (origin or {}),
        source=source,
        policy=policy,
    )

    async def send(content: str, view: discord.ui.View | None) -> int | None:
        if interaction.response.is_done():  # deferred while a picture downloaded: "thinking…" becomes this
            message = await interaction.edit_original_response(content=content, view=view, allowed_mentions=NO_MENTIONS)
            return message.id
        callback = await interaction.response.send_message(content, view=view, allowed_mentions=NO_MENTIONS)
        return callback.message_id

    await bot.delivery.acknowledge(ticket, send)
