"""The /imagine command."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.answers import answer_error, queue_for_interaction, read_attachment
from bot.flags import PromptFlags
from bot.loras import TrainedLora, trained_usable, usable_loras
from bot.moderation.gate import model_for
from bot.moderation.policy import load_policy
from generation.catalog import family_for
from generation.errors import InvalidRequest
from generation.loras import MAX_LORA_WEIGHT
from generation.options import make_request
from generation.request import MAX_COUNT, MAX_GUIDANCE, MAX_SEED, MAX_STEPS
from generation.samplers import sampler_names

if TYPE_CHECKING:
    from bot.app import ImagineBot

SIZES = [
    app_commands.Choice(name="Square 1:1", value="1:1"),
    app_commands.Choice(name="Portrait 2:3", value="2:3"),
    app_commands.Choice(name="Landscape 3:2", value="3:2"),
    app_commands.Choice(name="Tall 9:16", value="9:16"),
    app_commands.Choice(name="Wide 16:9", value="16:9"),
    app_commands.Choice(name="Portrait 4:5", value="4:5"),
]


class ImagineCog(commands.Cog):
    """Make pictures from text, or from a picture and text."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine")
    @app_commands.describe(
        prompt="What to draw",
        negative="What to keep out of the picture",
        image="Start from this picture (img2img)",
        mask="With an image: repaint only where this mask is white (inpainting)",
        strength="With an image: how much to change it, 0.05 (a little) to 1 (completely)",
        seed="Same seed + same settings = same picture",
        steps="More steps: more detail, slower",
        guidance="How closely to follow the prompt (0 for turbo models, about 7 for others)",
        size="Aspect ratio",
        count="How many pictures (1-4)",
        model="Which model draws it",
        sampler="Sampling method (A1111 names)",
        lora="A LoRA (style or subject add-on) for the model; more with <lora:NAME:0.8> in the prompt",
        lora_weight=f"How strongly the LoRA applies, -{MAX_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g} (default: its own)",
    )
    @app_commands.choices(size=SIZES)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 2000],
        negative: app_commands.Range[str, 0, 2000] | None = None,
        image: discord.Attachment | None = None,
        mask: discord.Attachment | None = None,
        strength: app_commands.Range[float, 0.05, 1.0] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
        guidance: app_commands.Range[float, 0.0, MAX_GUIDANCE] | None = None,
        size: app_commands.Choice[str] | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] = 1,
        model: str | None = None,
        sampler: str | None = None,
        lora: app_commands.Range[str, 1, 100] | None = None,
        lora_weight: app_commands.Range[float, -MAX_LORA_WEIGHT, MAX_LORA_WEIGHT] | None = None,
    ) -> None:
        """Make a picture from a prompt"""
        services = self.bot.services
        if lora_weight is not None and lora is None:
            await answer_error(interaction, "`lora_weight` needs a `lora` to apply to: pick one, or leave it out.")
            return
        asked = PromptFlags(
            prompt=prompt,
            negative=negative or "",
            strength=strength,
            seed=seed,
            steps=steps,
            guidance=guidance,
            size=size.value if size else None,
            model=model,
            sampler=sampler,
            count=count,
            loras=((lora.strip(), lora_weight),) if lora else (),
        )
        try:
            # The server's policy, read once: its default model now, its rules and limits at the gate.
            policy = await load_policy(services.store, services.config, interaction.guild_id)
            spec = model_for(services.catalog, policy, asked.model)
            if image is not None or mask is not None:
                await interaction.response.defer(thinking=True)  # downloading may take longer than 3 s
            options = asked.options(await read_attachment(image, "image"), await read_attachment(mask, "mask"))
            known = await usable_loras(services, interaction.user.id, interaction.guild_id)
            # Decoding and resizing stay off the loop.
            request = await asyncio.to_thread(make_request, spec, options, loras=known)
            await queue_for_interaction(interaction, request, policy=policy)
        except InvalidRequest as exc:
            await answer_error(interaction, exc.user_message)

    @imagine.autocomplete("model")
    async def _models(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        catalog = self.bot.services.catalog
        models = [catalog.models[name] for name in catalog.names]  # models that failed to load are left out
        return [
            app_commands.Choice(name=f"{m.name} — {m.description}"[:100] if m.description else m.name, value=m.name)
            for m in models
            if current.casefold() in m.name.casefold()
        ][:25]

    @imagine.autocomplete("lora")
    async def _loras(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        services = self.bot.services
        model = getattr(interaction.namespace, "model", None)
        if not model:  # the server's default model, as the command would use
            model = (await load_policy(services.store, services.config, interaction.guild_id)).default_model
        wanted = current.casefold()
        configured = [
            app_commands.Choice(name=_lora_label(lora.name, lora.triggers, lora.description), value=lora.name)
            for lora in services.catalog.loras_for(model)
            if wanted in lora.name.casefold()
        ]
        spec = services.catalog.models.get(model)
        if spec is None or not family_for(spec.kind).loras:
            return configured[:25]
        trained = [
            lora
            for lora in await trained_usable(services, interaction.user.id, interaction.guild_id)
            if lora.spec.kind == spec.kind and wanted in lora.spec.name.casefold()  # the unique name holds the plain
        ]
        own = [_trained_choice(lora) for lora in trained if lora.own]
        shared = [_trained_choice(lora) for lora in trained if not lora.own]
        return [*own, *configured, *shared][:25]  # as a plain name resolves: own first, then configured

    @imagine.autocomplete("sampler")
    async def _samplers(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=n, value=n) for n in sampler_names() if current.casefold() in n.casefold()][
            :25
        ]


def _lora_label(name: str, triggers: tuple[str, ...], description: str) -> str:
    """What the picker shows: the name, what it is, and the words that call it up (Discord allows 100 characters)."""
    label = f"{name} — {description}" if description else name
    if triggers:
        label += f" (trigger: {', '.join(triggers)})"
    return label[:100]


def _trained_choice(lora: TrainedLora) -> app_commands.Choice[str]:
    """A trained LoRA in the picker: its plain name, whose it is, its trigger word; picked by its unique name."""
    label = f"{lora.record.name} ({'yours' if lora.own else 'shared by a member'})"
    if lora.spec.triggers:
        label += f" · trigger: {', '.join(lora.spec.triggers)}"
    return app_commands.Choice(name=label[:100], value=lora.spec.name)


async def setup(bot: ImagineBot) -> None:
    """Extension entry point."""
    await bot.add_cog(ImagineCog(bot))
