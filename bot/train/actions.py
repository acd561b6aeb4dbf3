"""What the buttons on training messages do: cancel a training; use, share or delete the LoRA it made."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from bot.answers import answer_error, answer_unexpected, is_moderator, queue_for_interaction
from bot.flags import PromptFlags
from bot.loras import usable_loras
from bot.moderation.gate import model_for
from bot.moderation.policy import load_policy, may_delete_lora
from bot.render import NO_MENTIONS, safe_text
from bot.train.views import lora_view
from generation.catalog import trained_name
from generation.errors import InvalidRequest
from generation.options import make_request
from storage.records import LoraRecord

if TYPE_CHECKING:
    from bot.app import ImagineBot


async def run_training_action(interaction: discord.Interaction, action: str, target_id: int) -> None:
    """Dispatch a button click; refusals and unexpected errors are answered only to the clicker."""
    bot: ImagineBot = interaction.client  # type: ignore[assignment]
    try:
        if action == "cancel":
            await _cancel(interaction, bot, target_id)
        else:
            await _LORA_ACTIONS[action](interaction, bot, await _live_lora(bot, target_id))
    except InvalidRequest as exc:
        await answer_error(interaction, exc.user_message)
    except Exception as exc:  # else the clicker sees only "This interaction failed"
        await answer_unexpected(interaction, exc, f"training button {action} on {target_id}")


async def _cancel(interaction: discord.Interaction, bot: ImagineBot, training_id: int) -> None:
    training = await bot.services.store.get_training(training_id)
    if training is None:
        raise InvalidRequest("That training no longer exists.")
    own = interaction.user.id == training.user_id
    if not (own or (is_moderator(interaction) and training.guild_id == interaction.guild_id)):
        raise InvalidRequest("Only the member who started this training, or a moderator, can cancel it.")
    if not await bot.services.queue.cancel_training(training_id):
        raise InvalidRequest("That training has finished already.")
    await interaction.response.send_message("Training cancelled.", ephemeral=True, allowed_mentions=NO_MENTIONS)


async def _live_lora(bot: ImagineBot, lora_id: int) -> LoraRecord:
    lora = await bot.services.store.get_lora(lora_id)
    if lora is None or lora.deleted_at is not None:
        raise InvalidRequest("That LoRA was deleted.")
    return lora


class UseLoraModal(discord.ui.Modal, title="Use in /imagine"):
    """A prompt with the LoRA's tag and trigger word filled in, to edit and send."""

    def __init__(self, lora: LoraRecord, subject: str) -> None:
        super().__init__(custom_id=f"train:use:{lora.id}", timeout=600)
        self.lora = lora
        tag = f"<lora:{trained_name(lora.name, lora.id)}:1>"
        self.prompt = discord.ui.TextInput(
            label="Prompt",
            custom_id="prompt",
            style=discord.TextStyle.paragraph,
            default=f"a photo of {lora.trigger_token} {subject} {tag}",
            max_length=2000,
        )
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Queue the picture on the model the LoRA was trained on (else the server's default)."""
        bot: ImagineBot = interaction.client  # type: ignore[assignment]
        services = bot.services
        try:
            policy = await load_policy(services.store, services.config, interaction.guild_id)
            base = self.lora.base_model if self.lora.base_model in services.catalog.names else None
            spec = model_for(services.catalog, policy, base)
            known = await usable_loras(services, interaction.user.id, interaction.guild_id)
            request = make_request(spec, PromptFlags(prompt=self.prompt.value).options(None, None), loras=known)
            await queue_for_interaction(interaction, request, policy=policy)
        except InvalidRequest as exc:
            await answer_error(interaction, exc.user_message)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:  # type: ignore[override]
        """Log the unexpected and tell only this member."""
        await answer_unexpected(interaction, error, f"Use LoRA modal of {self.lora.id}")


async def _use(interaction: discord.Interaction, bot: ImagineBot, lora: LoraRecord) -> None:
    if not (lora.owner_id == interaction.user.id or (lora.shared and lora.guild_id == interaction.guild_id)):
        raise InvalidRequest(f"The LoRA '{lora.name}' belongs to another member and is not shared on this server.")
    training = await bot.services.store.get_training(lora.training_id) if lora.training_id else None
    await interaction.response.send_modal(UseLoraModal(lora, training.class_word if training else "person"))


async def _set_shared(interaction: discord.Interaction, bot: ImagineBot, lora: LoraRecord, shared: bool) -> None:
    services = bot.services
    if interaction.user.id != lora.owner_id:
        raise InvalidRequest("Only the member who trained this LoRA can share it or stop sharing it.")
    if lora.guild_id is None or lora.guild_id != interaction.guild_id:
        raise InvalidRequest("A LoRA can be shared only in the server it was trained in.")
    if shared:
        (await load_policy(services.store, services.config, lora.guild_id)).check_sharing()
    await services.store.set_lora_shared(lora.id, shared)
    updated = await _live_lora(bot, lora.id)
    await interaction.response.edit_message(view=lora_view(updated))
    said = (
        f"Shared: every member of this server can now pick **{safe_text(lora.name, 60)}** in /imagine."
        if shared
        else f"**{safe_text(lora.name, 60)}** is yours alone again."
    )
    await interaction.followup.send(said, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def _share(interaction: discord.Interaction, bot: ImagineBot, lora: LoraRecord) -> None:
    await _set_shared(interaction, bot, lora, True)


async def _unshare(interaction: discord.Interaction, bot: ImagineBot, lora: LoraRecord) -> None:
    await _set_shared(interaction, bot, lora, False)


async def delete_lora_for(interaction: discord.Interaction, lora: LoraRecord) -> str:
    """Delete a LoRA for its owner or a moderator of its server (else refuse); says who deleted it."""
    services = interaction.client.services  # type: ignore[attr-defined]
    if not may_delete_lora(lora, interaction.user.id, interaction.guild_id, is_moderator(interaction)):
        raise InvalidRequest("Only the member who trained this LoRA, or a moderator of its server, can delete it.")
    await services.store.delete_lora(lora.id)
    services.catalog.remove_trained(trained_name(lora.name, lora.id))  # queued jobs using it fail by name
    return "its owner" if interaction.user.id == lora.owner_id else "a moderator"


async def _delete(interaction: discord.Interaction, bot: ImagineBot, lora: LoraRecord) -> None:
    who = await delete_lora_for(interaction, lora)
    content = (interaction.message.content if interaction.message else "") + f"\n🗑️ LoRA deleted by {who}."
    await interaction.response.edit_message(content=content[:2000], view=None, allowed_mentions=NO_MENTIONS)


_LORA_ACTIONS = {"use": _use, "share": _share, "unshare": _unshare, "delete": _delete}
