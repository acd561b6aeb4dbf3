"""/train and Apps › "Train a style": a member's photos become a LoRA they can use in /imagine."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.answers import answer_error, answer_unexpected
from bot.moderation.gate import asker_from_interaction
from bot.moderation.policy import load_policy
from bot.train.start import start_training
from generation.errors import InvalidRequest
from generation.training_inputs import (
    MAX_NAME,
    MAX_PHOTOS,
    MAX_STEPS,
    MIN_PHOTOS,
    TRAINABLE_KINDS,
    check_photo_count,
)

if TYPE_CHECKING:
    from bot.app import ImagineBot

Photo = discord.Attachment | None
IMAGE_TYPES = ("image/",)


def _photos(*attachments: Photo) -> list[discord.Attachment]:
    return [attachment for attachment in attachments if attachment is not None]


class TrainModal(discord.ui.Modal, title="Train a style"):
    """Name, trigger word, subject and steps for a training from a message's photos."""

    def __init__(self, photos: list[discord.Attachment]) -> None:
        super().__init__(custom_id="train:modal", timeout=600)
        self.photos = photos
        self.name = discord.ui.TextInput(label="Name of the LoRA", custom_id="name", max_length=MAX_NAME)
        self.trigger = discord.ui.TextInput(
            label="Trigger word (one rare word, e.g. sks)", custom_id="trigger", max_length=32
        )
        self.subject = discord.ui.TextInput(
            label="What it is (person, dog, mug, style…)", custom_id="subject", max_length=40, default="person"
        )
        self.steps = discord.ui.TextInput(
            label="Steps (empty: the server's default)", custom_id="steps", max_length=5, required=False
        )
        for item in (self.name, self.trigger, self.subject, self.steps):
            self.add_item(item)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Start the training with the message's photos."""
        try:
            text = self.steps.value.strip()
            if text and not text.isdigit():
                raise InvalidRequest(f"Steps must be a whole number such as 500, not '{text[:10]}'.")
            await start_training(
                interaction,
                self.photos,
                name=self.name.value,
                trigger=self.trigger.value,
                subject=self.subject.value,
                steps=int(text) if text else None,
            )
        except InvalidRequest as exc:
            await answer_error(interaction, exc.user_message)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:  # type: ignore[override]
        """Log the unexpected and tell only this member."""
        await answer_unexpected(interaction, error, "Train a style modal")


class TrainCog(commands.Cog):
    """Dreambooth LoRA training for members."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Train a style", callback=self.train_from_message)

    async def cog_load(self) -> None:
        """Context menus cannot live in a cog's body: add it to the tree here."""
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        """Take the context menu away with the cog."""
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="train")
    @app_commands.describe(
        name="What to call the LoRA (you pick it in /imagine by this name)",
        trigger="A rare word that will stand for your subject in prompts, e.g. sks",
        subject="What it is: person, dog, mug, painting style… (default: person)",
        model="The model to train on (default: the server's)",
        steps=f"Training steps (default: the server's; at most {MAX_STEPS})",
        **{f"photo{i}": f"Photo {i} of your subject" for i in range(1, MAX_PHOTOS + 1)},
    )
    async def train(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, MAX_NAME],
        trigger: app_commands.Range[str, 1, 32],
        photo1: discord.Attachment,
        photo2: discord.Attachment,
        photo3: discord.Attachment,
        photo4: Photo = None,
        photo5: Photo = None,
        photo6: Photo = None,
        photo7: Photo = None,
        photo8: Photo = None,
        photo9: Photo = None,
        photo10: Photo = None,
        photo11: Photo = None,
        photo12: Photo = None,
        photo13: Photo = None,
        photo14: Photo = None,
        photo15: Photo = None,
        photo16: Photo = None,
        photo17: Photo = None,
        photo18: Photo = None,
        photo19: Photo = None,
        photo20: Photo = None,
        subject: app_commands.Range[str, 1, 40] = "person",
        model: str | None = None,
        steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
    ) -> None:
        """Teach a model your subject or style from 3-20 photos (a LoRA for /imagine)"""
        photos = _photos(
            photo1, photo2, photo3, photo4, photo5, photo6, photo7, photo8, photo9, photo10,
            photo11, photo12, photo13, photo14, photo15, photo16, photo17, photo18, photo19, photo20,
        )  # fmt: skip
        try:
            await start_training(
                interaction, photos, name=name, trigger=trigger, subject=subject, model=model, steps=steps
            )
        except InvalidRequest as exc:
            await answer_error(interaction, exc.user_message)

    @train.autocomplete("model")
    async def _models(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        catalog = self.bot.services.catalog
        return [
            app_commands.Choice(name=name, value=name)
            for name in catalog.names
            if catalog.models[name].kind in TRAINABLE_KINDS and current.casefold() in name.casefold()
        ][:25]

    async def train_from_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Apps › Train a style: the message's photos, then a form for the name and trigger word."""
        photos = [a for a in message.attachments if (a.content_type or "").startswith(IMAGE_TYPES)]
        services = self.bot.services
        try:
            check_photo_count(len(photos))
        except InvalidRequest:
            await answer_error(
                interaction,
                f"Training needs {MIN_PHOTOS} to {MAX_PHOTOS} photos of the subject; that message has {len(photos)}.",
            )
            return
        try:
            # What can be refused before the form is (training off, roles, photos): no form filled in vain.
            policy = await load_policy(services.store, services.config, interaction.guild_id)
            asker = asker_from_interaction(interaction)
            policy.check_training(asker.user_id, asker.places, asker.role_ids, photos=len(photos), steps=1)
        except InvalidRequest as exc:
            await answer_error(interaction, exc.user_message)
            return
        await interaction.response.send_modal(TrainModal(photos))


async def setup(bot: ImagineBot) -> None:
    """Extension entry point."""
    await bot.add_cog(TrainCog(bot))
