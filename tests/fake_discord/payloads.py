"""JSON payloads shaped like Discord's API v10 objects (snowflakes as strings)."""

from __future__ import annotations

from typing import Any

from .models import ChannelType, FakeChannel, FakeGuild, FakeMember, FakeRole, FakeUser, World

JSON = dict[str, Any]


def user_payload(user: FakeUser) -> JSON:
    """A user object."""
    data: JSON = {
        "id": str(user.id),
        "username": user.username,
        "discriminator": "0",
        "global_name": user.global_name,
        "avatar": None,
        "public_flags": 0,
        "flags": 0,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
        "primary_guild": None,
        "collectibles": None,
    }
    if user.bot:
        data["bot"] = True
    return data


def current_user_payload(user: FakeUser) -> JSON:
    """GET /users/@me and READY's user."""
    return {**user_payload(user), "verified": True, "mfa_enabled": False, "locale": "en-US", "email": None}


def member_payload(member: FakeMember, *, with_user: bool = True, permissions: int | None = None) -> JSON:
    """A guild member; interactions add the computed `permissions` string."""
    data: JSON = {
        "roles": [str(r) for r in member.roles],
        "nick": member.nick,
        "avatar": None,
        "banner": None,
        "joined_at": member.joined_at,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
    }
    if with_user:
        data["user"] = user_payload(member.user)
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def role_payload(role: FakeRole) -> JSON:
    """A role object."""
    data: JSON = {
        "id": str(role.id),
        "name": role.name,
        "permissions": str(role.permissions),
        "position": role.position,
        "color": role.color,
        "colors": {"primary_color": role.color, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "managed": role.managed,
        "mentionable": False,
        "flags": 0,
    }
    if role.tags is not None:
        data["tags"] = dict(role.tags)
    return data


def channel_payload(channel: FakeChannel, *, permissions: int | None = None) -> JSON:
    """A channel object (guild text/category or DM)."""
    if channel.type == ChannelType.DM:
        return {
            "id": str(channel.id),
            "type": ChannelType.DM,
            "last_message_id": None,
            "flags": 0,
            "recipients": [user_payload(u) for u in channel.recipients],
        }
    data: JSON = {
        "id": str(channel.id),
        "type": channel.type,
        "guild_id": str(channel.guild_id),
        "name": channel.name,
        "position": channel.position,
        "parent_id": str(channel.parent_id) if channel.parent_id else None,
        "permission_overwrites": [dict(ow) for ow in channel.permission_overwrites],
        "nsfw": channel.nsfw,
        "flags": 0,
    }
    if channel.type == ChannelType.GUILD_TEXT:
        data.update(topic=channel.topic, last_message_id=None, rate_limit_per_user=0)
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def guild_create_payload(guild: FakeGuild, bot_id: int) -> JSON:
    """GUILD_CREATE: the full guild with channels, roles and every member (the bot's included)."""
    bot_member = guild.members.get(bot_id)
    return {
        "id": str(guild.id),
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(guild.owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 1,
        "default_message_notifications": 1,
        "explicit_content_filter": 2,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": guild.preferred_locale,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "vanity_url_code": None,
        "max_members": 500000,
        "max_video_channel_users": 25,
        "features": [],
        "emojis": [],
        "stickers": [],
        "roles": [role_payload(r) for r in guild.roles],
        "joined_at": bot_member.joined_at if bot_member else None,
        "large": False,
        "unavailable": False,
        "lazy": True,
        "member_count": len(guild.members),
        "members": [member_payload(m) for m in guild.members.values()],
        "channels": [{k: v for k, v in channel_payload(c).items() if k != "guild_id"} for c in guild.channels],
        "threads": [],
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def guild_rest_payload(guild: FakeGuild) -> JSON:
    """GET /guilds/{id}: the guild without the gateway-only lists."""
    data = guild_create_payload(guild, 0)
    for key in ("members", "channels", "threads", "presences", "voice_states", "joined_at", "large", "lazy"):
        data.pop(key, None)
    return data


def application_payload(world: World) -> JSON:
    """GET /oauth2/applications/@me."""
    bot = world.bot_user
    return {
        "id": str(world.application_id),
        "name": bot.username,
        "icon": None,
        "description": "",
        "summary": "",
        "type": None,
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "flags": (1 << 19) | (1 << 23),  # GATEWAY_MESSAGE_CONTENT_LIMITED, APPLICATION_COMMAND_BADGE
        "owner": user_payload(world.application_owner),
        "team": None,
        "bot": user_payload(bot),
        "redirect_uris": [],
        "interactions_endpoint_url": None,
        "tags": [],
        "integration_types_config": {"0": {}},
    }


def ready_payload(
    world: World, session_id: str, resume_url: str, shard: list[int] | None, guilds: list[FakeGuild]
) -> JSON:
    """READY: the bot user, its (still unavailable) guilds on this shard and where to resume."""
    data: JSON = {
        "v": 10,
        "user": current_user_payload(world.bot_user),
        "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
        "session_id": session_id,
        "session_type": "normal",
        "resume_gateway_url": resume_url,
        "application": {"id": str(world.application_id), "flags": application_payload(world)["flags"]},
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "user_settings": {},
        "geo_ordered_rtc_regions": ["local"],
        "guild_join_requests": [],
        "auth_session_id_hash": "fake",
        "_trace": ['["fake-discord-gateway",{"micros":0}]'],
    }
    if shard is not None:
        data["shard"] = shard
    return data
