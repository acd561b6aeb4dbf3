"""REST routes for users, the application, the gateway URL, guilds, channels, messages and the CDN."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote

from .errors import (
    MISSING_ACCESS,
    UNKNOWN_CHANNEL,
    UNKNOWN_GUILD,
    UNKNOWN_MEMBER,
    UNKNOWN_MESSAGE,
    UNKNOWN_USER,
    RestError,
    form_error,
    unknown,
)
from .messages import StoredMessage
from .models import FakeChannel, FakeGuild, Permission
from .payloads import (
    application_payload,
    channel_payload,
    current_user_payload,
    guild_rest_payload,
    member_payload,
    role_payload,
    user_payload,
)
from .rest import RecordedRequest, Reply, Router

if TYPE_CHECKING:
    from .server import FakeDiscord

router = Router()
MAX_NONCE = 25  # characters, Discord's limit


def _channel(fake: FakeDiscord, channel_id: str) -> tuple[FakeChannel, FakeGuild | None]:
    found = fake.world.find_channel(int(channel_id)) if channel_id.isdigit() else None
    if found is None:
        raise unknown("Channel", UNKNOWN_CHANNEL)
    return found


def _guild(fake: FakeDiscord, guild_id: str) -> FakeGuild:
    guild = fake.world.find_guild(int(guild_id)) if guild_id.isdigit() else None
    if guild is None:
        raise unknown("Guild", UNKNOWN_GUILD)
    return guild


def _bot_in_guild(fake: FakeDiscord, guild: FakeGuild | None) -> None:
    """Missing Access in a server the bot is not (or no longer) a member of."""
    if guild is not None and fake.bot_user.id not in guild.members:
        raise RestError(403, MISSING_ACCESS, "Missing Access")


def _bot_needs(fake: FakeDiscord, channel: FakeChannel, guild: FakeGuild | None, needed: int) -> None:
    """Missing Access without View Channel, Missing Permissions without the rest (guild channels only)."""
    if guild is None:
        return
    _bot_in_guild(fake, guild)
    perms = guild.permissions_in(fake.bot_user.id, channel)
    if not perms & Permission.VIEW_CHANNEL:
        raise RestError(403, MISSING_ACCESS, "Missing Access")
    if perms & needed != needed:
        raise RestError(403, 50013, "Missing Permissions")


def _message(fake: FakeDiscord, channel: FakeChannel, message_id: str) -> StoredMessage:
    message = fake.store.get(int(message_id)) if message_id.isdigit() else None
    if message is None or message.channel_id != channel.id or message.ephemeral:
        raise unknown("Message", UNKNOWN_MESSAGE)
    return message


@router.route("GET", "/users/@me")
async def get_current_user(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """The bot user (discord.py's login)."""
    return Reply(200, current_user_payload(fake.bot_user))


@router.route("GET", "/users/{user_id}")
async def get_user(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """Any known user."""
    user = fake.world.users.get(int(params["user_id"])) if params["user_id"].isdigit() else None
    if user is None:
        raise unknown("User", UNKNOWN_USER)
    return Reply(200, user_payload(user))


@router.route("POST", "/users/@me/channels")
async def create_dm(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """Open (or return) the DM channel with a user."""
    user = fake.world.users.get(int((req.json or {}).get("recipient_id", 0)))
    if user is None:
        raise unknown("User", UNKNOWN_USER)
    return Reply(200, channel_payload(fake.world.dm_channel(user, fake.ids)))


@router.route("GET", "/oauth2/applications/@me")
async def get_application(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """Application info (discord.py's login fetches it)."""
    return Reply(200, application_payload(fake.world))


@router.route("GET", "/applications/@me")
async def get_application_new(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """Application info, newer path."""
    return Reply(200, application_payload(fake.world))


@router.route("GET", "/gateway", auth=False)
async def get_gateway(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """Where the gateway is."""
    return Reply(200, {"url": fake.ws_base})


@router.route("GET", "/gateway/bot")
async def get_gateway_bot(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """Gateway URL, recommended shard count and session start limits (AutoShardedClient)."""
    gateway = fake.gateway
    limit = {
        "total": 1000,
        "remaining": max(0, 1000 - gateway.session_starts),
        "reset_after": 14_400_000,
        "max_concurrency": gateway.max_concurrency,
    }
    return Reply(200, {"url": fake.ws_base, "shards": gateway.recommended_shards(), "session_start_limit": limit})


@router.route("GET", "/guilds/{guild_id}")
async def get_guild(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """A guild."""
    return Reply(200, guild_rest_payload(_guild(fake, params["guild_id"])))


@router.route("GET", "/guilds/{guild_id}/channels")
async def get_guild_channels(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """A guild's channels."""
    return Reply(200, [channel_payload(c) for c in _guild(fake, params["guild_id"]).channels])


@router.route("GET", "/guilds/{guild_id}/roles")
async def get_guild_roles(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """A guild's roles."""
    return Reply(200, [role_payload(r) for r in _guild(fake, params["guild_id"]).roles])


@router.route("GET", "/guilds/{guild_id}/members/{user_id}")
async def get_member(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """One member."""
    guild = _guild(fake, params["guild_id"])
    member = guild.members.get(int(params["user_id"])) if params["user_id"].isdigit() else None
    if member is None:
        raise unknown("Member", UNKNOWN_MEMBER)
    return Reply(200, member_payload(member))


@router.route("GET", "/channels/{channel_id}")
async def get_channel(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """A channel."""
    channel, _ = _channel(fake, params["channel_id"])
    return Reply(200, channel_payload(channel))


@router.route("POST", "/channels/{channel_id}/typing")
async def trigger_typing(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """Typing indicator."""
    _channel(fake, params["channel_id"])
    return Reply(204)


@router.route("GET", "/channels/{channel_id}/messages")
async def get_messages(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """History, newest first (limit, before, after)."""
    channel, guild = _channel(fake, params["channel_id"])
    _bot_needs(fake, channel, guild, Permission.READ_MESSAGE_HISTORY)
    messages = fake.store.in_channel(channel.id)
    if "before" in req.query:
        messages = [m for m in messages if m.id < int(req.query["before"])]
    if "after" in req.query:
        messages = [m for m in messages if m.id > int(req.query["after"])]
    limit = min(int(req.query.get("limit", 50)), 100)
    return Reply(200, [m.data for m in reversed(messages)][:limit])


@router.route("POST", "/channels/{channel_id}/messages")
async def create_message(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """The bot posts a message (JSON or multipart with files[n]); a repeated enforced nonce returns the first one."""
    channel, guild = _channel(fake, params["channel_id"])
    needed = Permission.SEND_MESSAGES | (Permission.ATTACH_FILES if req.files else 0)
    _bot_needs(fake, channel, guild, needed)
    body = req.json or {}
    nonce = body.get("nonce")
    if nonce is not None and len(str(nonce)) > MAX_NONCE:
        raise form_error(["nonce"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_NONCE} or fewer in length.")
    if nonce is not None and body.get("enforce_nonce"):
        earlier = fake.store.by_nonce(fake.bot_user.id, str(nonce))
        if earlier is not None:
            return Reply(200, earlier.data)
    message = await fake.create_message(channel.id, fake.bot_user, body, req.files)
    return Reply(200, message.data)


@router.route("GET", "/channels/{channel_id}/messages/{message_id}")
async def get_message(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """One message."""
    channel, guild = _channel(fake, params["channel_id"])
    _bot_needs(fake, channel, guild, Permission.READ_MESSAGE_HISTORY)
    return Reply(200, _message(fake, channel, params["message_id"]).data)


@router.route("PATCH", "/channels/{channel_id}/messages/{message_id}")
async def edit_message(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """Edit one of the bot's own messages."""
    channel, guild = _channel(fake, params["channel_id"])
    _bot_in_guild(fake, guild)
    message = _message(fake, channel, params["message_id"])
    if message.author_id != fake.bot_user.id:
        raise RestError(403, 50005, "Cannot edit a message authored by another user")
    await fake.edit_message(message, req.json or {}, req.files)
    return Reply(200, message.data)


@router.route("DELETE", "/channels/{channel_id}/messages/{message_id}")
async def delete_message(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """Delete the bot's message, or anyone's with Manage Messages."""
    channel, guild = _channel(fake, params["channel_id"])
    message = _message(fake, channel, params["message_id"])
    if message.author_id != fake.bot_user.id:
        _bot_needs(fake, channel, guild, Permission.MANAGE_MESSAGES)
    await fake.delete_message(message)
    return Reply(204)


def _reaction_key(emoji: str) -> dict[str, str | None]:
    name, _, emoji_id = unquote(emoji).partition(":")
    return {"id": emoji_id or None, "name": name}


@router.route("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me")
async def add_reaction(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """The bot reacts."""
    channel, guild = _channel(fake, params["channel_id"])
    _bot_needs(fake, channel, guild, Permission.ADD_REACTIONS | Permission.READ_MESSAGE_HISTORY)
    message = _message(fake, channel, params["message_id"])
    emoji = _reaction_key(params["emoji"])
    reactions = message.data.setdefault("reactions", [])
    existing = next((r for r in reactions if r["emoji"] == emoji), None)
    if existing is None:
        counts = {"burst": 0, "normal": 1}
        reactions.append({"emoji": emoji, "count": 1, "count_details": counts, "me": True, "me_burst": False})
    elif not existing["me"]:
        existing["count"] += 1
        existing["me"] = True
    fake.signal.notify()
    return Reply(204)


@router.route("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me")
async def remove_reaction(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """The bot removes its reaction."""
    channel, _ = _channel(fake, params["channel_id"])
    message = _message(fake, channel, params["message_id"])
    emoji = _reaction_key(params["emoji"])
    reactions = message.data.get("reactions", [])
    for reaction in list(reactions):
        if reaction["emoji"] == emoji and reaction["me"]:
            reaction["count"] -= 1
            reaction["me"] = False
            if reaction["count"] == 0:
                reactions.remove(reaction)
    fake.signal.notify()
    return Reply(204)


@router.route("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", auth=False)
@router.route("GET", "/media/attachments/{channel_id}/{attachment_id}/{filename}", auth=False)
async def get_attachment(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """The CDN: an uploaded file's bytes."""
    attachment = fake.store.attachments.get(int(params["attachment_id"])) if params["attachment_id"].isdigit() else None
    if attachment is None or str(attachment.channel_id) != params["channel_id"]:
        return Reply(404, {"message": "404: Not Found", "code": 0})
    return Reply(200, raw=attachment.data, content_type=attachment.content_type)
