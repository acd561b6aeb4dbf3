"""Buttons on training messages; restart-proof, the training's or LoRA's id lives in the custom_id."""

from __future__ import annotations

import re

import discord

from storage.records import LoraRecord

ACTIONS = {
    # action: (label, emoji, style, what the id is)
    "cancel": ("Cancel", "✖️", discord.ButtonStyle.secondary),  # a training
    "use": ("Use in /imagine", "🎨", discord.ButtonStyle.primary),  # a LoRA, and the rest too
    "share": ("Share with this server", "🤝", discord.ButtonStyle.secondary),
    "unshare": ("Stop sharing", "🔒", discord.ButtonStyle.secondary),
    "delete": ("Delete", "🗑️", discord.ButtonStyle.danger),
}


class TrainingButton(discord.ui.DynamicItem[discord.ui.Button], template=r"train:(?P<action>[a-z]+):(?P<id>\d+)"):
    """A button on a training message: Cancel (of a training), or Use/Share/Delete (of the LoRA it made)."""

    def __init__(self, action: str, target_id: int) -> None:
        label, emoji, style = ACTIONS[action]
        super().__init__(
            discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=f"train:{action}:{target_id}")
        )
        self.action, self.target_id = action, target_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> TrainingButton:
        """Rebuild the button from its custom_id, after a restart too."""
        if match["action"] not in ACTIONS:
            raise ValueError(f"unknown training button action {match['action']!r}")
        return cls(match["action"], int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Run the action for whoever clicked (the client owns the actions, so this module needs none)."""
        await interaction.client.run_training_button(interaction, self.action, self.target_id)  # type: ignore[attr-defined]


def progress_view(training_id: int) -> discord.ui.View:
    """Cancel, while the training waits or runs."""
    view = discord.ui.View(timeout=None)
    view.add_item(TrainingButton("cancel", training_id))
    return view


def lora_view(lora: LoraRecord) -> discord.ui.View:
    """Use in /imagine, Share (or Stop sharing) and Delete, for a LoRA made in a server; Use and Delete in DMs."""
    view = discord.ui.View(timeout=None)
    view.add_item(TrainingButton("use", lora.id))
    if lora.guild_id is not None:
        view.add_item(TrainingButton("unshare" if lora.shared else "share", lora.id))
    view.add_item(TrainingButton("delete", lora.id))
    return view
