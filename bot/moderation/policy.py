"""A server's moderation policy: its stored settings over the config's defaults, and the checks it makes.

Pure apart from `load_policy`: no Discord types, so every rule is testable on its own. The numeric
limits (steps, count, pixels, queued jobs, daily quota, cooldown) are enforced by JobQueue.submit;
everything else here, by bot.moderation.gate.admit, which every entry point goes through. LoRA training
(/train) is checked here too: `check_training`, `check_lora_words`, `check_daily_trainings`; and
`check_sharing`, `may_delete_lora` for what is done with a trained LoRA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot import render
from bot.config import Config
from bot.moderation.settings import DM_SCOPE, defaults
from bot.moderation.words import BannedWords
from generation.request import MAX_PROMPT_CHARS, GenerationRequest
from jobs.limits import LimitExceeded, Limits
from storage.records import LoraRecord
from storage.store import Store


class NotAllowed(LimitExceeded):
    """This person may not make images (or train LoRAs) here, or the prompt (or LoRA name) is banned."""


@dataclass(frozen=True)
class GuildPolicy:
    """Everything a server (None: direct messages) decides about who may generate what, and where."""

    guild_id: int | None
    limits: Limits
    channels: frozenset[int]
    roles: frozenset[int]
    share_roles: Mapping[int, float]
    blocked_users: frozenset[int]
    banned_words: BannedWords
    negative_prompt: str
    nsfw: str
    default_model: str
    dms: bool  # bot-wide: read for direct messages only
    training: bool = True
    train_roles: frozenset[int] = frozenset()  # none: whoever may make images
    lora_sharing: bool = True

    def check_access(self, user_id: int, places: frozenset[int], role_ids: frozenset[int]) -> None:
        """Refuse, naming the setting, someone who may not make images here; `places` is the channel and its parents."""
        if self.guild_id is None:
            if not self.dms:
                raise NotAllowed("This bot does not make images in direct messages (setting `dms`: off).")
            return
        if user_id in self.blocked_users:
            raise NotAllowed("A moderator has blocked you from making images on this server (`blocked_users`).")
        if self.channels and not self.channels & places:
            where = ", ".join(f"<#{c}>" for c in sorted(self.channels))
            raise NotAllowed(f"Images can only be made in {where} on this server (`channels`).")
        if self.roles and not self.roles & role_ids:
            needed = ", ".join(f"<@&{r}>" for r in sorted(self.roles))
            raise NotAllowed(f"Making images on this server needs one of these roles: {needed} (`roles`).")

    def check_prompt(self, prompt: str) -> None:
        """Refuse a prompt with a banned word or phrase, naming the entry it matched."""
        found = self.banned_words.find(prompt)
        if found is not None:
            shown = render.safe_text(found, 60)
            raise NotAllowed(f"Your prompt has a word this server does not allow: ||{shown}|| (`banned_words`).")

    def check_training(
        self, user_id: int, places: frozenset[int], role_ids: frozenset[int], photos: int, steps: int
    ) -> None:
        """Refuse, naming the setting or limit, a training this person may not start here.

        Who may make images here may train, unless the server turned training off or named `train_roles`;
        in direct messages only `dms` and the operator's limits apply.
        """
        self.check_access(user_id, places, role_ids)
        if self.guild_id is not None:
            if not self.training:
                raise NotAllowed("Training LoRAs is turned off on this server (setting `training`: off).")
            if self.train_roles and not self.train_roles & role_ids:
                needed = ", ".join(f"<@&{r}>" for r in sorted(self.train_roles))
                raise NotAllowed(f"Training LoRAs on this server needs one of these roles: {needed} (`train_roles`).")
        whose = "this server's" if self.guild_id is not None else "the bot's"
        if photos > self.limits.max_train_photos:
            raise LimitExceeded(
                f"{photos} photos is over {whose} limit of {self.limits.max_train_photos} per training "
                "(`max_train_photos`)."
            )
        if steps > self.limits.max_train_steps:
            raise LimitExceeded(
                f"{steps} training steps is over {whose} limit of {self.limits.max_train_steps} (`max_train_steps`)."
            )

    def check_lora_words(self, name: str, trigger: str) -> None:
        """Refuse a LoRA name or trigger word with a banned word or phrase, naming which and the entry."""
        for what, text in (("name", name), ("trigger word", trigger)):
            found = self.banned_words.find(text)
            if found is not None:
                shown = render.safe_text(found, 60)
                raise NotAllowed(
                    f"Your LoRA's {what} has a word this server does not allow: ||{shown}|| (`banned_words`)."
                )

    def check_sharing(self) -> None:
        """Refuse sharing a LoRA with the server when the server turned sharing off."""
        if not self.lora_sharing:
            raise NotAllowed("Sharing LoRAs is turned off on this server (setting `lora_sharing`: off).")

    def apply_negative(self, request: GenerationRequest, applies: bool = True) -> GenerationRequest:
        """The request with the server's negative prompt appended (once: rerolls already carry it).

        `applies`: whether the model would use it for this request (not at guidance 1 or below, where only
        a refusal of the member's own negative prompt is right; the server's is left out).
        """
        extra = self.negative_prompt
        if not extra or extra in request.negative_prompt or not applies:
            return request
        negative = f"{request.negative_prompt}, {extra}" if request.negative_prompt else extra
        if len(negative) > MAX_PROMPT_CHARS:
            raise NotAllowed(
                f"Your negative prompt and this server's own (`negative_prompt`) are {len(negative)} characters "
                f"together; the limit is {MAX_PROMPT_CHARS}. Shorten yours."
            )
        return request.with_changes(negative_prompt=negative)

    def weight(self, role_ids: frozenset[int]) -> float:
        """A member's fair share of the GPU: the largest weight among their roles, else 1."""
        return max((w for role, w in self.share_roles.items() if role in role_ids), default=1.0)


def build_policy(
    guild_id: int | None, stored: Mapping[str, Any], dm_stored: Mapping[str, Any], config: Config
) -> GuildPolicy:
    """The policy from a server's stored settings (and the bot-wide ones) over the config's defaults."""
    values = defaults(config) | dict(stored)
    models = config.model_map
    return GuildPolicy(
        guild_id=guild_id,
        limits=config.limits.with_overrides(stored),
        channels=frozenset(int(c) for c in values["channels"]),
        roles=frozenset(int(r) for r in values["roles"]),
        share_roles={int(role): float(weight) for role, weight in values["share_roles"].items()},
        blocked_users=frozenset(int(u) for u in values["blocked_users"]),
        banned_words=BannedWords(values["banned_words"]),
        negative_prompt=values["negative_prompt"],
        nsfw=values["nsfw"],
        # A model removed from the config since it was chosen falls back to the config's default.
        default_model=values["default_model"] if values["default_model"] in models else config.generation.default_model,
        dms=bool(dm_stored.get("dms", True)),
        training=bool(values["training"]),
        train_roles=frozenset(int(r) for r in values["train_roles"]),
        lora_sharing=bool(values["lora_sharing"]),
    )


def may_delete_lora(lora: LoraRecord, user_id: int, guild_id: int | None, is_moderator: bool) -> bool:
    """Whether someone may delete a LoRA: its owner, or a moderator (Manage Server) of the server it was made in."""
    if lora.owner_id == user_id:
        return True
    return is_moderator and lora.guild_id is not None and lora.guild_id == guild_id


async def check_daily_trainings(store: Store, policy: GuildPolicy, user_id: int) -> None:
    """Refuse another training past the member's daily quota here (`daily_trainings_per_user`; 0: none)."""
    quota = policy.limits.daily_trainings_per_user
    if not quota:
        return
    used = await store.trainings_today(user_id, policy.guild_id)
    if used >= quota:
        where = "on this server" if policy.guild_id is not None else "in direct messages"
        raise LimitExceeded(
            f"You have started {used} of your {quota} trainings today (UTC) {where} (`daily_trainings_per_user`)."
        )


async def load_policy(store: Store, config: Config, guild_id: int | None) -> GuildPolicy:
    """A server's policy as stored right now (None: the policy for direct messages), in one read.

    Read it once per request and pass it on: the gate, the queue's limits and NSFW screening all use it.
    A server's policy does not need the bot-wide settings (only `dms`, which only direct messages check).
    """
    if guild_id is None:
        return build_policy(None, {}, await store.get_guild_settings(DM_SCOPE), config)
    return build_policy(guild_id, await store.get_guild_settings(guild_id), {}, config)
