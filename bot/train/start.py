"""Starting a training for a member: every check first, then the photos stored, the training queued.

Shared by /train and the Apps › "Train a style" message menu. Each refusal names the limit that applied and
is answered only to the member, before anything is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

import discord

from bot.answers import interaction_origin, read_attachment
from bot.moderation.gate import asker_from_interaction, model_for
from bot.moderation.policy import check_daily_trainings, load_policy
from bot.render import NO_MENTIONS, safe_text
from generation.errors import InvalidRequest
from generation.training_inputs import (
    TRAINABLE_KINDS,
    TrainingSettings,
    check_lora_name,
    check_photo_count,
    prepare_photos,
)
from storage.records import LoraNameTaken

if TYPE_CHECKING:
    from bot.app import ImagineBot


async def start_training(
    interaction: discord.Interaction,
    photos: Sequence[discord.Attachment],
    *,
    name: str,
    trigger: str,
    subject: str,
    model: str | None = None,
    steps: int | None = None,
) -> None:
    """Check, store and queue a training for whoever triggered the interaction; answer with its place."""
    bot: ImagineBot = interaction.client  # type: ignore[assignment]
    services = bot.services
    services.queue.check_trainings()  # Ray GPU workers cannot train: refused before anything else
    store = services.store
    policy = await load_policy(store, services.config, interaction.guild_id)
    asker = asker_from_interaction(interaction)
    steps = steps or min(services.config.generation.train_steps, policy.limits.max_train_steps)
    policy.check_training(asker.user_id, asker.places, asker.role_ids, photos=len(photos), steps=steps)
    check_photo_count(len(photos))
    name = check_lora_name(name)
    trigger = trigger.strip()
    policy.check_lora_words(name, trigger)
    spec = model_for(services.catalog, policy, model)
    if spec.kind not in TRAINABLE_KINDS:
        raise InvalidRequest(
            f"LoRAs can be trained on {' and '.join(TRAINABLE_KINDS)} models; '{spec.name}' is {spec.kind}. "
            "Pick another `model`."
        )
    settings = TrainingSettings(
        token=trigger,
        class_word=subject.strip() or "person",
        steps=steps,
        learning_rate=services.config.generation.train_learning_rate,
        resolution=min(spec.width, spec.height),
    )
    await check_daily_trainings(store, policy, asker.user_id)
    active = await store.active_trainings(asker.user_id)
    if active:
        raise InvalidRequest(
            f"Your training “{safe_text(active[0].name, 60)}” is still under way: one at a time. "
            "Wait for it, or cancel it."
        )
    if await store.lora_by_name(asker.user_id, name) is not None:
        raise InvalidRequest(
            f"You already have a LoRA named '{safe_text(name, 60)}': pick another name, or delete it (/loras delete)."
        )

    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True)  # downloading the photos may take longer than 3 s
    data = [await read_attachment(photo, f"photo {i} ({photo.filename})") for i, photo in enumerate(photos, 1)]
    labels = [f"{i} ({photo.filename})" for i, photo in enumerate(photos, 1)]
    fitted = await asyncio.to_thread(prepare_photos, data, settings.resolution, labels)  # safe decoding, off the loop
    try:
        training = await store.create_training(
            user_id=asker.user_id,
            guild_id=asker.guild_id,
            channel_id=asker.channel_id,
            name=name,
            trigger_token=trigger,
            class_word=settings.class_word,
            base_model=spec.name,
            kind=spec.kind,
            settings=asdict(settings),
            total_steps=settings.steps,
            photos=fitted,
            origin=interaction_origin(interaction)
            | {"weight": policy.weight(asker.role_ids), "class_images": services.config.generation.train_class_images},
        )
    except LoraNameTaken as exc:  # two quick requests for one name: the second loses
        raise InvalidRequest(str(exc)) from None
    position = services.queue.push_training(training)

    async def send(content: str, view: discord.ui.View) -> int | None:
        message = await interaction.edit_original_response(content=content, view=view, allowed_mentions=NO_MENTIONS)
        return message.id

    await bot.training_delivery.acknowledge(training, position, send)
