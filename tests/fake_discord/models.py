"""The fake Discord's world: users, roles, channels, guilds, permission maths and snowflakes."""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field

DISCORD_EPOCH_MS = 1_420_070_400_000


class Permission:
    """Discord permission bits (the subset tests talk about)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_AUDIT_LOG = 1 << 7
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CHANGE_NICKNAME = 1 << 26
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    SEND_MESSAGES_IN_THREADS = 1 << 38
    USE_EXTERNAL_APPS = 1 << 50
    ALL = (1 << 51) - 1

    EVERYONE_DEFAULT = (
        CREATE_INSTANT_INVITE
        | ADD_REACTIONS
        | VIEW_CHANNEL
        | SEND_MESSAGES
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | MENTION_EVERYONE
        | USE_EXTERNAL_EMOJIS
        | CHANGE_NICKNAME
        | USE_APPLICATION_COMMANDS
        | SEND_MESSAGES_IN_THREADS
        | USE_EXTERNAL_APPS
    )
    BOT_DEFAULT = (
        VIEW_CHANNEL
        | SEND_MESSAGES
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | ADD_REACTIONS
        | USE_EXTERNAL_EMOJIS
        | SEND_MESSAGES_IN_THREADS
        | USE_APPLICATION_COMMANDS
    )
    MODERATOR = MANAGE_GUILD | MANAGE_MESSAGES | KICK_MEMBERS | VIEW_AUDIT_LOG


class ChannelType:
    """Discord channel type numbers."""

    GUILD_TEXT = 0
    DM = 1
    GUILD_CATEGORY = 4


class SnowflakeGenerator:
    """Monotonic snowflakes: real timestamps in the top bits, a counter below.

    The counter is shared by every generator in the process, so ids from a hand-built World never
    collide with the ids a FakeDiscord generates later.
    """

    _last = 0

    def next(self) -> int:
        """Return a new snowflake, strictly greater than every earlier one."""
        now = int(time.time() * 1000) - DISCORD_EPOCH_MS
        SnowflakeGenerator._last = max(now << 22, SnowflakeGenerator._last + 1)
        return SnowflakeGenerator._last

    def next_on_shard(self, shard_id: int, shard_count: int) -> int:
        """A new snowflake whose guild would be on shard `shard_id` of `shard_count` ((id >> 22) % count)."""
        millis = (self.next() >> 22) + 1  # the shard depends on the timestamp bits: step them to the right one
        millis += (shard_id - millis) % shard_count
        SnowflakeGenerator._last = millis << 22
        return SnowflakeGenerator._last


def iso_now() -> str:
    """Current UTC time the way Discord writes timestamps."""
    return datetime.datetime.now(datetime.UTC).isoformat()


@dataclass
class FakeUser:
    """A Discord user (human or bot)."""

    id: int
    username: str
    global_name: str | None = None
    bot: bool = False

    @property
    def mention(self) -> str:
        """The `<@id>` mention string."""
        return f"<@{self.id}>"


@dataclass
class FakeRole:
    """A guild role; the @everyone role has the guild's id."""

    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    tags: dict[str, str] | None = None
    color: int = 0


@dataclass
class FakeMember:
    """A user's membership in a guild."""

    user: FakeUser
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=iso_now)


@dataclass
class FakeChannel:
    """A guild text channel, category or DM channel."""

    id: int
    name: str
    type: int = ChannelType.GUILD_TEXT
    guild_id: int | None = None
    position: int = 0
    parent_id: int | None = None
    topic: str | None = None
    nsfw: bool = False
    # Discord overwrite dicts: {"id", "type" (0 role, 1 member), "allow", "deny"} with string bit fields.
    permission_overwrites: list[dict[str, object]] = field(default_factory=list)
    recipients: list[FakeUser] = field(default_factory=list)


@dataclass
class FakeGuild:
    """A guild with its roles, channels and members."""

    id: int
    name: str
    owner_id: int
    roles: list[FakeRole] = field(default_factory=list)
    channels: list[FakeChannel] = field(default_factory=list)
    members: dict[int, FakeMember] = field(default_factory=dict)
    preferred_locale: str = "en-US"

    def role(self, name: str) -> FakeRole:
        """The role with this name."""
        return next(r for r in self.roles if r.name == name)

    def channel(self, name: str) -> FakeChannel:
        """The channel with this name."""
        return next(c for c in self.channels if c.name == name)

    def add_member(self, user: FakeUser, roles: list[int] | None = None) -> FakeMember:
        """Make `user` a member with the given role ids."""
        member = FakeMember(user=user, roles=list(roles or []))
        self.members[user.id] = member
        return member

    def base_permissions(self, user_id: int) -> int:
        """Guild-level permissions: @everyone + roles, owner and administrators get all."""
        if user_id == self.owner_id:
            return Permission.ALL
        member = self.members[user_id]
        perms = 0
        for role in self.roles:
            if role.id == self.id or role.id in member.roles:
                perms |= role.permissions
        return Permission.ALL if perms & Permission.ADMINISTRATOR else perms

    def permissions_in(self, user_id: int, channel: FakeChannel | None) -> int:
        """Effective permissions in a channel, applying overwrites the way Discord does."""
        perms = self.base_permissions(user_id)
        if perms & Permission.ADMINISTRATOR or channel is None:
            return perms
        member = self.members[user_id]
        overwrites = channel.permission_overwrites

        def apply(matches: list[dict[str, object]]) -> None:
            nonlocal perms
            allow = deny = 0
            for ow in matches:
                allow |= int(str(ow.get("allow", "0")))
                deny |= int(str(ow.get("deny", "0")))
            perms = (perms & ~deny) | allow

        apply([ow for ow in overwrites if int(str(ow["id"])) == self.id])
        apply([ow for ow in overwrites if ow.get("type") == 0 and int(str(ow["id"])) in member.roles])
        apply([ow for ow in overwrites if ow.get("type") == 1 and int(str(ow["id"])) == user_id])
        return perms


@dataclass
class World:
    """Everything the fake knows about before any message is sent."""

    bot_user: FakeUser
    application_owner: FakeUser
    guilds: list[FakeGuild]
    users: dict[int, FakeUser]
    dm_channels: dict[int, FakeChannel] = field(default_factory=dict)

    @property
    def application_id(self) -> int:
        """Modern Discord apps share their id with their bot user."""
        return self.bot_user.id

    def find_channel(self, channel_id: int) -> tuple[FakeChannel, FakeGuild | None] | None:
        """The channel and its guild, or None."""
        for guild in self.guilds:
            for channel in guild.channels:
                if channel.id == channel_id:
                    return channel, guild
        for channel in self.dm_channels.values():
            if channel.id == channel_id:
                return channel, None
        return None

    def dm_channel(self, user: FakeUser, ids: SnowflakeGenerator) -> FakeChannel:
        """The bot's DM channel with `user`, created on first use."""
        channel = self.dm_channels.get(user.id)
        if channel is None:
            channel = FakeChannel(ids.next(), "", ChannelType.DM, recipients=[user])
            self.dm_channels[user.id] = channel
        return channel

    def find_guild(self, guild_id: int) -> FakeGuild | None:
        """The guild with this id, or None."""
        return next((g for g in self.guilds if g.id == guild_id), None)


def build_default_world(ids: SnowflakeGenerator) -> World:
    """One guild "Test Server" with an owner, a moderator (Manage Server), two members and the bot."""
    bot = FakeUser(ids.next(), "imagine-bot", "Imagine", bot=True)
    owner = FakeUser(ids.next(), "owner", "Server Owner")
    moderator = FakeUser(ids.next(), "moderator", "Mod")
    alice = FakeUser(ids.next(), "alice", "Alice")
    bob = FakeUser(ids.next(), "bob", "Bob")
    guild_id = ids.next()
    everyone = FakeRole(guild_id, "@everyone", Permission.EVERYONE_DEFAULT)
    mod_role = FakeRole(ids.next(), "Moderator", Permission.MODERATOR | Permission.EVERYONE_DEFAULT, position=2)
    bot_role = FakeRole(
        ids.next(), "imagine-bot", Permission.BOT_DEFAULT, position=1, managed=True, tags={"bot_id": str(bot.id)}
    )
    category = FakeChannel(ids.next(), "Text Channels", ChannelType.GUILD_CATEGORY, guild_id)
    general = FakeChannel(ids.next(), "general", guild_id=guild_id, position=0, parent_id=category.id)
    art = FakeChannel(ids.next(), "art", guild_id=guild_id, position=1, parent_id=category.id, topic="Pictures")
    guild = FakeGuild(
        guild_id, "Test Server", owner.id, roles=[everyone, mod_role, bot_role], channels=[category, general, art]
    )
    guild.add_member(owner)
    guild.add_member(moderator, [mod_role.id])
    guild.add_member(alice)
    guild.add_member(bob)
    guild.add_member(bot, [bot_role.id])
    users = {u.id: u for u in (bot, owner, moderator, alice, bob)}
    return World(bot_user=bot, application_owner=owner, guilds=[guild], users=users)


def build_guild(ids: SnowflakeGenerator, guild_id: int, name: str, bot: FakeUser, members: list[FakeUser]) -> FakeGuild:
    """A guild owned by the first of `members`, with #general, the bot's managed role, the bot and `members`."""
    everyone = FakeRole(guild_id, "@everyone", Permission.EVERYONE_DEFAULT)
    bot_role = FakeRole(
        ids.next(), bot.username, Permission.BOT_DEFAULT, position=1, managed=True, tags={"bot_id": str(bot.id)}
    )
    general = FakeChannel(ids.next(), "general", guild_id=guild_id)
    guild = FakeGuild(guild_id, name, members[0].id, roles=[everyone, bot_role], channels=[general])
    for user in members:
        guild.add_member(user)
    guild.add_member(bot, [bot_role.id])
    return guild
