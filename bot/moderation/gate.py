"""The one door every job goes through: who asks, where, with what prompt, under which server policy.

`submit_job` is called by bot.answers.queue_for_interaction (/imagine, every button, the Edit and
Remix modals) and by reply remix. It checks DMs, the block list, channels, roles and banned words, that each
trained LoRA is the asker's or shared on this server (a button pressed by another member, a typed `NAME#ID`),
appends the server's negative prompt, sets the member's fair-share weight, records the server's NSFW
setting and whether the channel is age-restricted, then hands over to JobQueue.submit, which checks
the numeric limits. The policy is read once per request: whoever read it to pick the model passes it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot.loras import check_lora_access
from bot.moderation.nsfw import previews_allowed
from bot.moderation.policy import GuildPolicy, load_policy
from generation.catalog import Catalog
from generation.request import GenerationRequest
from generation.specs import ModelSpec
from jobs.queue import Requester, Ticket

if TYPE_CHECKING:
    from bot.services import Services


@dataclass(frozen=True)
class Asker:
    """Who asks for a job and where, in the terms the policy checks."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    places: frozenset[int]  # the channel, its parent channel (for threads) and its category
    role_ids: frozenset[int]
    channel_nsfw: bool


def _asker(user: discord.abc.User, guild_id: int | None, channel: Any, channel_id: int | None) -> Asker:
    places = {channel_id, getattr(channel, "parent_id", None), getattr(channel, "category_id", None)}
    is_nsfw = getattr(channel, "is_nsfw", None)
    return Asker(
        user_id=user.id,
        guild_id=guild_id,
        channel_id=channel_id,
        places=frozenset(p for p in places if p is not None),
        role_ids=frozenset(role.id for role in getattr(user, "roles", ())),
        channel_nsfw=bool(is_nsfw()) if callable(is_nsfw) else False,
    )


def asker_from_interaction(interaction: discord.Interaction) -> Asker:
    """The member (or DM user) behind an interaction."""
    return _asker(interaction.user, interaction.guild_id, interaction.channel, interaction.channel_id)


def asker_from_message(message: discord.Message) -> Asker:
    """The author of a message (a reply remix)."""
    guild_id = message.guild.id if message.guild else None
    return _asker(message.author, guild_id, message.channel, message.channel.id)


def model_for(catalog: Catalog, policy: GuildPolicy, name: str | None) -> ModelSpec:
    """The model picked, else the server's default model (itself the config's unless changed)."""
    return catalog.spec(name or policy.default_model)


def admit(
    policy: GuildPolicy, asker: Asker, request: GenerationRequest, *, negative_applies: bool = True
) -> tuple[GenerationRequest, Requester]:
    """Check everything the server decides beyond numeric limits; the request as it will run, and for whom.

    Raises NotAllowed (an InvalidRequest) naming the setting that refused. Moderators pass the same checks.
    `negative_applies`: whether the model would use the server's negative prompt for this request.
    """
    policy.check_access(asker.user_id, asker.places, asker.role_ids)
    policy.check_prompt(request.prompt)
    request = policy.apply_negative(request, negative_applies)
    requester = Requester(
        user_id=asker.user_id,
        guild_id=asker.guild_id,
        channel_id=asker.channel_id,
        weight=policy.weight(asker.role_ids),
    )
    return request, requester


async def submit_job(
    services: Services,
    asker: Asker,
    request: GenerationRequest,
    *,
    origin: dict[str, Any],
    source: tuple[int, int] | None = None,
    policy: GuildPolicy | None = None,
) -> Ticket:
    """Admit the request under the server's policy (read now unless given) and its trained LoRAs for the asker,
    then queue it; refusals name the rule.

    JobQueue.submit checks the numeric limits and commits the job.
    """
    if policy is None:
        policy = await load_policy(services.store, services.config, asker.guild_id)
    uses_negative = services.catalog.family(request.model).uses_negative(request)
    request, requester = admit(policy, asker, request, negative_applies=uses_negative)
    await check_lora_access(services, asker.user_id, asker.guild_id, request)
    checked = services.safety_checks(request.model)
    origin = origin | {
        "nsfw": policy.nsfw,
        "channel_nsfw": asker.channel_nsfw,
        "previews": previews_allowed(policy.nsfw, asker.channel_nsfw, checked),
    }
    return await services.queue.submit(request, requester, origin=origin, source=source, limits=policy.limits)
