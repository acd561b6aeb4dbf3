"""Buttons on job messages. They survive restarts: the job id lives in the custom_id."""

from __future__ import annotations

import re

import discord

from storage.records import JobRecord

ACTIONS = {
    # action: (label, emoji, style)
    "cancel": ("Cancel", "✖️", discord.ButtonStyle.secondary),
    "reroll": ("Reroll", "🔄", discord.ButtonStyle.secondary),
    "vary": ("Vary", None, discord.ButtonStyle.secondary),
    "upscale": ("Upscale", None, discord.ButtonStyle.secondary),
    "edit": ("Edit", "✏️", discord.ButtonStyle.secondary),
    "info": ("Info", "ℹ️", discord.ButtonStyle.secondary),
    "delete": ("Delete", "🗑️", discord.ButtonStyle.danger),
    # Zoom Out and Pan (generation.outpaint): the canvas grows and inpainting fills its new border.
    "zoomhalf": ("Zoom Out 1.5x", "🔍", discord.ButtonStyle.secondary),
    "zoomdouble": ("Zoom Out 2x", "🔍", discord.ButtonStyle.secondary),
    "panleft": ("", "⬅️", discord.ButtonStyle.secondary),
    "panright": ("", "➡️", discord.ButtonStyle.secondary),
    "panup": ("", "⬆️", discord.ButtonStyle.secondary),
    "pandown": ("", "⬇️", discord.ButtonStyle.secondary),
}
OUTPAINT_ACTIONS = ("zoomhalf", "zoomdouble", "panleft", "panright", "panup", "pandown")


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"imagine:(?P<action>[a-z]+):(?P<job>\d+)(?::(?P<index>\d+))?",
):
    """A button that acts on one job (and optionally one of its images)."""

    def __init__(
        self, action: str, job_id: int, index: int | None = None, *, label: str | None = None, row: int | None = None
    ) -> None:
        default_label, emoji, style = ACTIONS[action]
        custom_id = f"imagine:{action}:{job_id}" + ("" if index is None else f":{index}")
        super().__init__(
            discord.ui.Button(
                label=label or default_label or None, emoji=emoji, style=style, custom_id=custom_id, row=row
            )
        )
        self.action, self.job_id, self.index = action, job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> JobButton:
        """Rebuild the button from its custom_id, after a restart too."""
        action = match["action"]
        if action not in ACTIONS:
            raise ValueError(f"unknown button action {action!r}")
        index = int(match["index"]) if match["index"] is not None else None
        return cls(action, int(match["job"]), index)

    async def callback(self, interaction: discord.Interaction) -> None:
        """Run the action for whoever clicked (the client owns the actions, so this module needs none)."""
        await interaction.client.run_button(interaction, self.action, self.job_id, self.index)  # type: ignore[attr-defined]


def progress_view(job: JobRecord) -> discord.ui.View:
    """A Cancel button while the job waits or runs."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("cancel", job.id))
    return view


def result_view(job: JobRecord, outpaint: bool = False) -> discord.ui.View:
    """Reroll / Vary / Upscale / Edit / Info / Delete, and Zoom Out / Pan when the model can inpaint (`outpaint`);
    per-image U and V buttons for a grid (zoom and pan come after an upscale, as in Midjourney)."""
    view = discord.ui.View(timeout=None)
    if job.count == 1:
        for action, row in (("reroll", 0), ("vary", 0), ("upscale", 0), ("edit", 0), ("info", 0)):
            view.add_item(JobButton(action, job.id, 0 if action in ("vary", "upscale") else None, row=row))
        if outpaint:
            for action in OUTPAINT_ACTIONS:
                view.add_item(JobButton(action, job.id, 0, row=1 if action.startswith("zoom") else 2))
        view.add_item(JobButton("delete", job.id, row=1))
        return view
    for index in range(job.count):
        view.add_item(JobButton("upscale", job.id, index, label=f"U{index + 1}", row=0))
    for index in range(job.count):
        view.add_item(JobButton("vary", job.id, index, label=f"V{index + 1}", row=1))
    for action in ("reroll", "edit", "info", "delete"):
        view.add_item(JobButton(action, job.id, row=2))
    return view
