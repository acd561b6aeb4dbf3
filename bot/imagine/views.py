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
    # Upscale (Subtle): the upscaler alone. Upscale (Creative): the upscaler, then a light img2img pass at the new
    # size; its action keeps the old Upscale button's name, so buttons on older messages do what they did.
    "subtle": ("Upscale (Subtle)", None, discord.ButtonStyle.secondary),
    "upscale": ("Upscale (Creative)", "✨", discord.ButtonStyle.secondary),
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


def result_view(job: JobRecord, outpaint: bool = False, subtle: bool = False) -> discord.ui.View:
    """A result's buttons. One picture: Upscale (Subtle) (only with an upscaler, `subtle`), ✨ Upscale (Creative),
    Vary, Reroll, Edit; Zoom Out (when the model can inpaint, `outpaint`), Info, Delete; the four Pans. A grid:
    U1-U4 (Subtle), ✨ U1-U4 (Creative) and V1-V4 per picture, then Reroll, Edit, Info, Delete (zoom and pan come
    after an upscale, as in Midjourney). At most 5 rows of 5, as Discord allows."""
    view = discord.ui.View(timeout=None)
    upscales = ("subtle", "upscale") if subtle else ("upscale",)
    if job.count == 1:
        for action in (*upscales, "vary", "reroll", "edit"):
            view.add_item(JobButton(action, job.id, 0 if action in (*upscales, "vary") else None, row=0))
        for action in (*(OUTPAINT_ACTIONS[:2] if outpaint else ()), "info", "delete"):
            view.add_item(JobButton(action, job.id, 0 if action in OUTPAINT_ACTIONS else None, row=1))
        for action in OUTPAINT_ACTIONS[2:] if outpaint else ():
            view.add_item(JobButton(action, job.id, 0, row=2))
        return view
    for row, action in enumerate((*upscales, "vary")):
        letter = "V" if action == "vary" else "U"
        for index in range(job.count):
            view.add_item(JobButton(action, job.id, index, label=f"{letter}{index + 1}", row=row))
    for action in ("reroll", "edit", "info", "delete"):
        view.add_item(JobButton(action, job.id, row=len(upscales) + 1))
    return view


def upscaled_view(job: JobRecord) -> discord.ui.View:
    """An upscaled picture's buttons: Info and Delete (it is the finished picture)."""
    view = discord.ui.View(timeout=None)
    for action in ("info", "delete"):
        view.add_item(JobButton(action, job.id))
    return view
