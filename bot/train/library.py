"""/loras list and /loras delete: a member's LoRAs and those shared here; moderators see the server's too."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.answers import answer_error, is_moderator
from bot.loras import trained_usable
from bot.render import NO_MENTIONS, safe_text
from bot.train.actions import delete_lora_for
from generation.errors import InvalidRequest
from storage.records import LoraRecord

if TYPE_CHECKING:
    from bot.app import ImagineBot

LIST_LIMIT = 4000  # characters of an embed description, with room to spare


def _line(lora: LoraRecord, user_id: int, mention: bool = True) -> str:
    owner = "yours" if lora.owner_id == user_id else f"by <@{lora.owner_id}>" if mention else "a member's"
    sharing = "shared here" if lora.shared else "private"
    return (
        f"**{safe_text(lora.name, 60)}** ({owner}, {sharing}) · trigger `{safe_text(lora.trigger_token, 40)}` · "
        f"{lora.kind}, trained on {safe_text(lora.base_model, 40)}"
    )


class LorasCog(commands.GroupCog, group_name="loras", group_description="Your LoRAs and those shared here"):
    """The LoRA library as members and moderators see it."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        super().__init__()

    async def _visible(self, interaction: discord.Interaction) -> list[LoraRecord]:
        """Own and shared-here LoRAs; for a moderator, every LoRA trained on this server as well."""
        services = self.bot.services
        usable = await trained_usable(services, interaction.user.id, interaction.guild_id)
        found = {lora.record.id: lora.record for lora in usable}
        if is_moderator(interaction) and interaction.guild_id is not None:
            for record in await services.store.loras_made_in(interaction.guild_id):
                found.setdefault(record.id, record)
        return sorted(found.values(), key=lambda record: record.id, reverse=True)

    @app_commands.command(name="list")
    async def list_(self, interaction: discord.Interaction) -> None:
        """The LoRAs you can use here (moderators: every LoRA trained on this server)"""
        loras = await self._visible(interaction)
        if not loras:
            text = "No LoRAs here yet. Train one with /train (3-20 photos of a subject)."
            await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        lines, used = [], 0
        for lora in loras:
            line = _line(lora, interaction.user.id)
            if used + len(line) + 1 > LIST_LIMIT:
                lines.append(f"… and {len(loras) - len(lines)} more.")
                break
            lines.append(line)
            used += len(line) + 1
        embed = discord.Embed(title="LoRAs", description="\n".join(lines))
        embed.set_footer(text="Use one with /imagine lora:NAME, or <lora:NAME:0.8> in a prompt.")
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="delete")
    @app_commands.describe(lora="The LoRA to delete (yours; moderators: any trained on this server)")
    async def delete(self, interaction: discord.Interaction, lora: app_commands.Range[str, 1, 100]) -> None:
        """Delete a LoRA for good"""
        try:
            chosen = next((r for r in await self._visible(interaction) if lora in (str(r.id), r.name)), None)
            if chosen is None:
                raise InvalidRequest(f"You have no LoRA called '{safe_text(lora, 60)}' that you may delete here.")
            who = await delete_lora_for(interaction, chosen)
        except InvalidRequest as exc:
            await answer_error(interaction, exc.user_message)
            return
        text = f"🗑️ Deleted the LoRA **{safe_text(chosen.name, 60)}** (as {who})."
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @delete.autocomplete("lora")
    async def _deletable(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        moderator, user = is_moderator(interaction), interaction.user.id
        return [
            app_commands.Choice(name=_line(r, user, mention=False).replace("**", "")[:100], value=str(r.id))
            for r in await self._visible(interaction)
            if (r.owner_id == user or moderator) and current.casefold() in r.name.casefold()
        ][:25]


async def setup(bot: ImagineBot) -> None:
    """Extension entry point."""
    await bot.add_cog(LorasCog(bot))
