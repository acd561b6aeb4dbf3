"""FakeDiscord: a loopback Discord (REST + gateway + CDN) for the real discord.py client."""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from . import channel_routes, command_routes, interaction_routes
from .commands import CommandStore
from .gateway import MESSAGE_CONTENT, Gateway, GatewayLogEntry
from .interactions import InteractionFactory
from .messages import MessageStore, StoredMessage, Upload
from .models import (
    FakeChannel,
    FakeGuild,
    FakeUser,
    Permission,
    SnowflakeGenerator,
    World,
    build_default_world,
    build_guild,
)
from .payloads import JSON, channel_payload, guild_create_payload, member_payload
from .rest import Injection, RecordedRequest, RestApi, Router
from .user_actions import UserActions
from .waiting import ChangeSignal

GUILD_MESSAGES, DIRECT_MESSAGES = 1 << 9, 1 << 12
OUTAGE_BODY = {"message": "Service Unavailable", "code": 0}


class FakeDiscord(UserActions):
    """Serve Discord's API v10 and gateway on 127.0.0.1 and act as its users in tests."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        world: World | None = None,
        interaction_ack_timeout: float | None = 3.0,
        interaction_token_ttl: float = 15 * 60.0,
    ) -> None:
        self.token = token
        self.ids = SnowflakeGenerator()
        self.world = world or build_default_world(self.ids)
        self.interaction_ack_timeout = interaction_ack_timeout
        self.interaction_token_ttl = interaction_token_ttl
        self.dm_permissions = Permission.BOT_DEFAULT
        self.signal = ChangeSignal()
        self.port = 0
        self.store = MessageStore(self.world, self.ids, lambda: self.base_url)
        self.commands = CommandStore(self.ids, self.world.application_id)
        self.interactions = InteractionFactory(self)
        self.gateway = Gateway(self.world, self.signal, lambda: self.token, lambda: self.ws_base)
        router = Router()
        for module in (channel_routes, command_routes, interaction_routes):
            router.routes.extend(module.router.routes)
        self.rest = RestApi(self, router)
        self.outage: Injection | None = None
        self._runner: web.AppRunner | None = None

    # lifecycle

    async def start(self) -> None:
        """Listen on a random loopback port."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path in ("/gateway", "/gateway/", "/gateway/resume", "/"):
            app.router.add_get(path, self.gateway.handle)
        for prefix in ("/api/v10/", "/attachments/", "/media/"):
            app.router.add_route("*", prefix + "{tail:.*}", self.rest.handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close websockets and the server."""
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """The value for discord.http.Route.BASE (and the bot's `[discord] api_base`)."""
        return self.base_url + "/api/v10"

    @property
    def ws_base(self) -> str:
        """ws://127.0.0.1:PORT"""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        """The value for DiscordWebSocket.DEFAULT_GATEWAY (and the bot's `[discord] gateway_url`)."""
        return self.ws_base + "/gateway"

    def now(self) -> float:
        """The event loop's clock (interaction deadlines use it)."""
        return asyncio.get_running_loop().time()

    # the default world's cast

    @property
    def bot_user(self) -> FakeUser:
        """The bot's user."""
        return self.world.bot_user

    @property
    def application_id(self) -> int:
        """The application id (same as the bot user's)."""
        return self.world.application_id

    @property
    def guild(self) -> FakeGuild:
        """The first guild."""
        return self.world.guilds[0]

    @property
    def channel(self) -> FakeChannel:
        """#general in the first guild."""
        return self.guild.channel("general")

    @property
    def owner(self) -> FakeUser:
        """The first guild's owner (all permissions)."""
        return self.world.users[self.guild.owner_id]

    @property
    def moderator(self) -> FakeUser:
        """A member with the Moderator role (Manage Server)."""
        return self.user("moderator")

    @property
    def member(self) -> FakeUser:
        """A plain member (alice)."""
        return self.user("alice")

    @property
    def other_member(self) -> FakeUser:
        """Another plain member (bob)."""
        return self.user("bob")

    def user(self, username: str) -> FakeUser:
        """A user by username."""
        return next(u for u in self.world.users.values() if u.username == username)

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The bot's DM channel with `user`."""
        return self.world.dm_channel(user, self.ids)

    def add_guild(self, name: str, *, shard: tuple[int, int] | None = None) -> FakeGuild:
        """A new guild with the bot, the owner, alice and bob in it, before the bot connects (after: join_guild).

        `shard=(id, count)` picks its id so that Discord would send its events on that shard.
        """
        guild_id = self.ids.next_on_shard(*shard) if shard else self.ids.next()
        members = [self.owner, self.member, self.other_member]
        guild = build_guild(self.ids, guild_id, name, self.bot_user, members)
        self.world.guilds.append(guild)
        return guild

    async def remove_bot(self, guild: FakeGuild) -> None:
        """Kick the bot from a guild: GUILD_DELETE (without `unavailable`), then Missing Access there."""
        await self.gateway.dispatch("GUILD_DELETE", {"id": str(guild.id)})
        del guild.members[self.bot_user.id]
        self.signal.notify()

    async def delete_channel(self, channel: FakeChannel) -> None:
        """Delete a guild channel and its messages, dispatching CHANNEL_DELETE, as when a moderator removes it."""
        found = self.world.find_channel(channel.id)
        if found is None or found[1] is None:
            raise ValueError(f"{channel.id} is not a channel of a guild")
        found[1].channels.remove(channel)
        for message in self.store.in_channel(channel.id, include_ephemeral=True):
            message.deleted = True
        await self.gateway.dispatch("CHANNEL_DELETE", channel_payload(channel))
        self.signal.notify()

    async def join_guild(self, guild: FakeGuild) -> None:
        """Add a guild (the bot must be a member) and send GUILD_CREATE, as when the bot is invited."""
        if self.bot_user.id not in guild.members:
            raise ValueError("add the bot as a member of the guild first")
        self.world.guilds.append(guild)
        for member in guild.members.values():
            self.world.users.setdefault(member.user.id, member.user)
        await self.gateway.dispatch("GUILD_CREATE", guild_create_payload(guild, self.bot_user.id))

    # inspection and waiting

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request so far, in order."""
        return self.rest.requests

    def messages(self, channel_id: int | None = None, *, include_ephemeral: bool = False) -> list[JSON]:
        """Live messages (REST shape) in a channel (default #general), oldest first."""
        channel = channel_id or self.channel.id
        return [copy.deepcopy(m.data) for m in self.store.in_channel(channel, include_ephemeral=include_ephemeral)]

    def message(self, message_id: int) -> JSON | None:
        """A live message by id (ephemeral ones too)."""
        stored = self.store.get(message_id)
        return copy.deepcopy(stored.data) if stored else None

    def attachment_bytes(self, attachment: JSON | int) -> bytes:
        """The bytes behind an attachment object or id."""
        attachment_id = int(attachment["id"]) if isinstance(attachment, dict) else attachment
        return self.store.attachments[attachment_id].data

    def registered_commands(self, guild_id: int | None = None) -> list[JSON]:
        """Commands registered globally (None) or for a guild."""
        return self.commands.list(guild_id)

    async def wait_until(self, probe: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Return `probe()` once it is not None (re-checked after every change)."""
        return await self.signal.wait_for(probe, timeout, what)

    async def wait_for_request(
        self, predicate: Callable[[RecordedRequest], Any], timeout: float = 10.0, *, since: int = 0
    ) -> RecordedRequest:
        """The first answered request (index >= `since`) matching `predicate`."""

        def probe() -> RecordedRequest | None:
            return next((r for r in self.requests[since:] if r.answered and predicate(r)), None)

        return await self.signal.wait_for(probe, timeout, lambda: f"requests so far: {self.requests[-15:]}")

    async def wait_for_gateway(
        self, kind: str, predicate: Callable[[GatewayLogEntry], Any] = bool, timeout: float = 10.0, *, since: int = 0
    ) -> GatewayLogEntry:
        """A gateway log entry (connect, identify, resume, resumed, heartbeat, disconnect, ...)."""

        def probe() -> GatewayLogEntry | None:
            return next((e for e in self.gateway.log[since:] if e.kind == kind and predicate(e)), None)

        return await self.signal.wait_for(probe, timeout, lambda: f"gateway log: {self.gateway.log[-15:]}")

    async def wait_for_message(
        self, predicate: Callable[[JSON], Any] = bool, timeout: float = 10.0, *, channel_id: int | None = None
    ) -> JSON:
        """The first live message (in a channel, or anywhere) matching `predicate`."""

        def probe() -> JSON | None:
            for message in self.store.messages.values():
                if message.deleted or (channel_id is not None and message.channel_id != channel_id):
                    continue
                if predicate(message.data):
                    return copy.deepcopy(message.data)
            return None

        return await self.signal.wait_for(probe, timeout, "no message matched")

    # faults

    def inject(
        self,
        method: str,
        path: str,
        status: int | None = 500,
        *,
        times: int | None = 1,
        body: Any = None,
        headers: dict[str, str] | None = None,
        retry_after: float = 0.05,
        delay: float = 0.0,
        where: Callable[[RecordedRequest], Any] | None = None,
        lose_response: bool = False,
    ) -> Injection:
        """Answer requests matching `method` ("*" for any), regex `path` and `where` with `status`, `times` times.

        `status=None` with a `delay` only slows the request down; `times=None` never runs out; `lose_response`
        lets the request take effect and replaces only its answer (with `status`, or with None by a dropped
        connection).
        """
        injection = Injection(
            method.upper(),
            re.compile(path),
            status,
            times,
            body,
            headers or {},
            delay,
            retry_after,
            where,
            lose_response=lose_response,
        )
        self.rest.injections.append(injection)
        return injection

    def clear_injections(self) -> None:
        """Remove all injected faults."""
        self.rest.injections.clear()
        self.outage = None

    def start_outage(self, status: int = 503, *, body: Any = None) -> Injection:
        """Answer every REST request with `status` until end_outage(), the gateway staying up, as in a Discord API
        outage. 503 (the default) is what discord.py 2.7 raises at once; it retries 500/502/504 for about 25 s."""
        if body is None and status == 503:
            body = OUTAGE_BODY
        self.end_outage()
        self.outage = Injection("*", re.compile(r"^/"), status, None, body)
        self.rest.injections.insert(0, self.outage)
        return self.outage

    def end_outage(self) -> None:
        """REST answers normally again."""
        if self.outage is not None and self.outage in self.rest.injections:
            self.rest.injections.remove(self.outage)
        self.outage = None

    async def drop_gateway(self, code: int | None = None, *, shard: int = 0) -> None:
        """Drop the gateway connection (abort TCP when `code` is None)."""
        await self.gateway.drop(code, shard)

    async def send_reconnect(self, *, shard: int = 0) -> None:
        """Gateway op 7 RECONNECT."""
        await self.gateway.send_reconnect(shard)

    async def invalidate_session(self, *, resumable: bool = False, shard: int = 0) -> None:
        """Gateway op 9 INVALID_SESSION."""
        await self.gateway.invalidate_session(resumable=resumable, shard=shard)

    async def dispatch(self, event: str, data: JSON) -> int:
        """Send any DISPATCH event; returns its sequence number."""
        return await self.gateway.dispatch(event, data)

    # message lifecycle shared by the routes and the user actions

    async def create_message(
        self,
        channel_id: int,
        author: FakeUser,
        body: JSON,
        uploads: list[Upload],
        *,
        extra: JSON | None = None,
        flags: int = 0,
        message_type: int = 0,
    ) -> StoredMessage:
        """Store a message and dispatch MESSAGE_CREATE (unless ephemeral)."""
        found = self.world.find_channel(channel_id)
        guild = found[1] if found else None
        message = self.store.create(
            channel_id,
            guild.id if guild else None,
            author,
            body,
            uploads,
            extra=extra,
            flags=flags,
            message_type=message_type,
        )
        await self._dispatch_message("MESSAGE_CREATE", message)
        self.signal.notify()
        return message

    async def edit_message(
        self, message: StoredMessage, body: JSON, uploads: list[Upload], *, clear_loading: bool = False
    ) -> None:
        """Apply an edit and dispatch MESSAGE_UPDATE."""
        self.store.edit(message, body, uploads, clear_loading=clear_loading)
        await self._dispatch_message("MESSAGE_UPDATE", message)
        self.signal.notify()

    async def delete_message(self, message: StoredMessage) -> None:
        """Delete and dispatch MESSAGE_DELETE."""
        message.deleted = True
        if not message.ephemeral and self._wants_messages(message):
            data: JSON = {"id": str(message.id), "channel_id": str(message.channel_id)}
            if message.guild_id:
                data["guild_id"] = str(message.guild_id)
            await self.gateway.dispatch("MESSAGE_DELETE", data)
        self.signal.notify()

    def _wants_messages(self, message: StoredMessage) -> bool:
        needed = GUILD_MESSAGES if message.guild_id else DIRECT_MESSAGES
        return bool(self.gateway.intents_for(message.guild_id) & needed)

    async def _dispatch_message(self, event: str, message: StoredMessage) -> None:
        if message.ephemeral or not self._wants_messages(message):
            return
        data = copy.deepcopy(message.data)
        guild = self.world.find_guild(message.guild_id) if message.guild_id else None
        if guild is not None:
            data["guild_id"] = str(guild.id)
            member = guild.members.get(message.author_id)
            if member is not None and "webhook_id" not in data:
                data["member"] = member_payload(member, with_user=False)
            for mention in data["mentions"]:
                mentioned = guild.members.get(int(mention["id"]))
                if mentioned is not None:
                    mention["member"] = member_payload(mentioned, with_user=False)
        bot_id = str(self.bot_user.id)
        mentioned_bot = any(m["id"] == bot_id for m in data["mentions"])
        from_bot = data["author"]["id"] == bot_id
        content_intent = self.gateway.intents_for(message.guild_id) & MESSAGE_CONTENT
        if guild and not content_intent and not from_bot and not mentioned_bot:
            data.update(content="", embeds=[], attachments=[], components=[])
        await self.gateway.dispatch(event, data)
