"""/describe: four prompt suggestions for a picture, each with a button that makes it with /imagine.

The buttons keep no state anywhere: `describe:<n>` reads suggestion n back from the numbered lines of the
message it is on, so they work after restarts and for whoever clicks them.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.answers import answer_error, answer_unexpected, queue_for_interaction, read_attachment
from bot.moderation.gate import asker_from_interaction, model_for
from bot.moderation.policy import load_policy
from bot.render import NO_MENTIONS, safe_text
from generation.captioning import PREFIXES
from generation.errors import InvalidRequest, UserFacingError
from generation.images import decode_image
from generation.options import UserOptions, make_request

if TYPE_CHECKING:
    from bot.app import ImagineBot

KEYCAPS = tuple(f"{n}\ufe0f\u20e3" for n in range(1, len(PREFIXES) + 1))  # 1️⃣ 2️⃣ 3️⃣ 4️⃣
HEADER = "🔎 Prompt suggestions for this picture; press a number to make it with /imagine:"
NOT_SET_UP = "/describe is not set up on this bot: its operator has not configured a captioning model."
_LINE = re.compile(r"^([1-9])\ufe0f\u20e3 (.+)$")
_ESCAPED = re.compile(r"\\(.)")  # discord.utils.escape_markdown puts one backslash before each special character
_MENTION = re.compile("@\u200b(everyone|here|[!&]?[0-9]{17,20})")  # and escape_mentions a zero-width space here


def suggestions_text(suggestions: list[str]) -> str:
    """The reply: a header, then one numbered line per suggestion, made inert (no markdown, no mentions)."""
    lines = [f"{KEYCAPS[i]} {safe_text(text)}" for i, text in enumerate(suggestions)]
    return "\n".join([HEADER, *lines])


def suggestion_in(content: str, number: int) -> str | None:
    """Suggestion `number` (from 1) as the message shows it, escapes undone; None if the message has none."""
    for line in content.splitlines():
        match = _LINE.match(line)
        if match and int(match[1]) == number:
            return _MENTION.sub(r"@\1", _ESCAPED.sub(r"\1", match[2]))
    return None


class SuggestionButton(discord.ui.DynamicItem[discord.ui.Button], template=r"describe:(?P<number>[1-9])"):
    """Make suggestion n of the message with /imagine, for whoever clicks, on the server's default model."""

    def __init__(self, number: int) -> None:
        super().__init__(
            discord.ui.Button(
                emoji=KEYCAPS[number - 1], style=discord.ButtonStyle.secondary, custom_id=f"describe:{number}"
            )
        )
        self.number = number

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> SuggestionButton:
        """Rebuild the button from its custom_id, after a restart too."""
        number = int(match["number"])
        if number > len(KEYCAPS):
            raise ValueError(f"no suggestion button {number}")
        return cls(number)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        """Queue the suggestion through the same gate as every button; refusals go only to the clicker."""
        bot: ImagineBot = interaction.client  # type: ignore[assignment]
        services = bot.services
        try:
            prompt = suggestion_in(interaction.message.content if interaction.message else "", self.number)
            if prompt is None:
                raise InvalidRequest(f"This message has no suggestion {self.number} any more.")
            policy = await load_policy(services.store, services.config, interaction.guild_id)
            spec = model_for(services.catalog, policy, None)
            request = make_request(spec, UserOptions(prompt=prompt))  # text only: nothing to decode
            await queue_for_interaction(interaction, request, policy=policy)
        except InvalidRequest as exc:
            await answer_error(interaction, exc.user_message)
        except Exception as exc:  # else the clicker sees only "This interaction failed"
            await answer_unexpected(interaction, exc, f"button describe:{self.number}")


def suggestions_view(count: int) -> discord.ui.View:
    """One numbered button per suggestion."""
    view = discord.ui.View(timeout=None)
    for number in range(1, count + 1):
        view.add_item(SuggestionButton(number))
    return view


class DescribeCog(commands.Cog):
    """Prompts suggested for a picture."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="describe")
    @app_commands.describe(image="The picture to describe")
    async def describe(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        """Suggest four prompts for a picture, each with a button that makes it"""
        services = self.bot.services
        captioner, run_on_gpu = services.captioner, services.run_on_gpu
        if captioner is None or run_on_gpu is None:
            await answer_error(interaction, NOT_SET_UP)
            return
        try:
            # Who may not make images here gets no suggestions either: they exist to be made.
            policy = await load_policy(services.store, services.config, interaction.guild_id)
            asker = asker_from_interaction(interaction)
            policy.check_access(asker.user_id, asker.places, asker.role_ids)
            await interaction.response.defer(thinking=True)  # downloading and captioning take longer than 3 s
            what = f"image ({image.filename})"
            data = await read_attachment(image, what)  # refuses an oversized file before downloading it
            picture = await asyncio.to_thread(decode_image, data or b"", what)
            suggestions = await run_on_gpu(captioner.suggestions, picture)
            if not suggestions:
                raise InvalidRequest("The captioning model found nothing to say about this picture; try another.")
            await interaction.edit_original_response(
                content=suggestions_text(suggestions),
                view=suggestions_view(len(suggestions)),
                allowed_mentions=NO_MENTIONS,
            )
        except UserFacingError as exc:  # refusals, and a captioning model that cannot be loaded
            await answer_error(interaction, exc.user_message)
        except Exception as exc:
            await answer_unexpected(interaction, exc, "command /describe")


async def setup(bot: ImagineBot) -> None:
    """Extension entry point; the suggestion buttons answer on every message that has them, old ones too."""
    bot.add_dynamic_items(SuggestionButton)
    await bot.add_cog(DescribeCog(bot))
