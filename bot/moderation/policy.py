"""A server's moderation policy: its stored settings over the config's defaults, and the checks it makes.

Pure apart from `load_policy`: no Discord types, so every rule is testable on its own. The numeric
limits (steps, count, pixels, queued jobs, daily quota, cooldown) are enforced by JobQueue.submit;
everything else here, by bot.moderation.gate.admit, which every entry point goes through.
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
from storage.store import Store


class NotAllowed(LimitExceeded):
    """This person may not make images here (channel, role, block list, DMs) or the prompt is banned."""


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
    )


async def load_policy(store: Store, config: Config, guild_id: int | None) -> GuildPolicy:
    """A server's policy as stored right now (None: the policy for direct messages), in one read.

    Read it once per request and pass it on: the gate, the queue's limits and NSFW screening all use it.
    A server's policy does not need the bot-wide settings (only `dms`, which only direct messages check).
    """
    if guild_id is None:
        return build_policy(None, {}, await store.get_guild_settings(DM_SCOPE), config)
    return build_policy(guild_id, await store.get_guild_settings(guild_id), {}, config)
