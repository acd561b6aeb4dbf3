"""What a test does as a Discord user: slash commands, clicks, modals, context menus, messages."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from .commands import CHAT_INPUT, MESSAGE, USER
from .components import BUTTON, SELECTS, STRING_SELECT, find_component, modal_submit_components, walk
from .interactions import APPLICATION_COMMAND, AUTOCOMPLETE, MESSAGE_COMPONENT, MODAL_SUBMIT, InteractionHandle
from .messages import StoredMessage, Upload
from .models import ChannelType, FakeUser
from .options import OptionBuilder, autocomplete_options
from .payloads import JSON, member_payload, user_payload

if TYPE_CHECKING:
    from .server import FakeDiscord

AttachmentSpec = tuple[str, bytes] | tuple[str, bytes, str]


class UserActions:
    """Mixed into FakeDiscord: every action dispatches a real gateway event to the bot."""

    def _find_command(self: FakeDiscord, name: str, channel_id: int, kind: int) -> tuple[JSON, int | None]:
        found = self.world.find_channel(channel_id)
        if found is None:
            raise ValueError(f"unknown channel {channel_id}")
        guild = found[1]
        command = self.commands.find(name, guild.id if guild else None, kind)
        if command is None:
            registered = [c["name"] for scope in self.commands.scopes.values() for c in scope.values()]
            raise LookupError(f"command {name!r} (type {kind}) is not registered; registered: {registered}")
        return command, guild.id if guild else None

    def _command_data(self: FakeDiscord, command: JSON, kind: int) -> JSON:
        data: JSON = {"id": command["id"], "name": command["name"], "type": kind}
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return data

    def _default_channel(self: FakeDiscord, guild_id: int | None) -> int:
        if guild_id is None:
            return self.channel.id
        guild = self.world.find_guild(guild_id)
        if guild is None:
            raise ValueError(f"unknown guild {guild_id}")
        return next(c.id for c in guild.channels if c.type == ChannelType.GUILD_TEXT)

    async def _send(self: FakeDiscord, handle: InteractionHandle) -> InteractionHandle:
        await self.gateway.dispatch("INTERACTION_CREATE", handle.payload)
        return handle

    async def send_slash_command(
        self: FakeDiscord,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: FakeUser | None = None,
        channel_id: int | None = None,
        guild_id: int | None = None,
        attachments: dict[str, AttachmentSpec] | None = None,
        validate: bool = True,
    ) -> InteractionHandle:
        """Run `/name` (or `/group sub`) with options typed by the registered schema.

        The channel defaults to #general, or the first text channel of `guild_id`; attachments are
        `(filename, bytes[, content_type])` keyed by option name.
        """
        command_name, *path = name.split()
        channel_id = channel_id or self._default_channel(guild_id)
        command, guild_id = self._find_command(command_name, channel_id, CHAT_INPUT)
        values = {**(options or {}), **(attachments or {})}
        guild = self.world.find_guild(guild_id) if guild_id else None
        builder = OptionBuilder(self, guild, channel_id, validate=validate)
        data = self._command_data(command, CHAT_INPUT)
        data["options"] = builder.build(command, path, values)
        if builder.resolved:
            data["resolved"] = builder.resolved
        handle = self.interactions.create(
            APPLICATION_COMMAND, data, user=user or self.member, channel_id=channel_id, command_name=command_name
        )
        return await self._send(handle)

    async def send_autocomplete(
        self: FakeDiscord,
        name: str,
        options: dict[str, Any],
        focused: str,
        *,
        user: FakeUser | None = None,
        channel_id: int | None = None,
    ) -> InteractionHandle:
        """Typing into option `focused` of `/name` (or `/group sub`); await `handle.wait_for_choices()`."""
        channel_id = channel_id or self.channel.id
        command_name, *path = name.split()
        command, _ = self._find_command(command_name, channel_id, CHAT_INPUT)
        data = self._command_data(command, CHAT_INPUT)
        data["options"] = autocomplete_options(command, options, focused, path)
        handle = self.interactions.create(
            AUTOCOMPLETE, data, user=user or self.member, channel_id=channel_id, command_name=command_name
        )
        return await self._send(handle)

    async def send_message_command(
        self: FakeDiscord, name: str, target_message_id: int, *, user: FakeUser | None = None
    ) -> InteractionHandle:
        """A message context menu ("Apps > name") on a message."""
        target = self._message_or_error(target_message_id)
        command, _ = self._find_command(name, target.channel_id, MESSAGE)
        data = self._command_data(command, MESSAGE)
        data["target_id"] = str(target.id)
        data["resolved"] = {"messages": {str(target.id): copy.deepcopy(target.data)}}
        handle = self.interactions.create(
            APPLICATION_COMMAND, data, user=user or self.member, channel_id=target.channel_id, command_name=name
        )
        return await self._send(handle)

    async def send_user_command(
        self: FakeDiscord, name: str, target: FakeUser, *, user: FakeUser | None = None, channel_id: int | None = None
    ) -> InteractionHandle:
        """A user context menu on `target`."""
        channel_id = channel_id or self.channel.id
        command, guild_id = self._find_command(name, channel_id, USER)
        data = self._command_data(command, USER)
        data["target_id"] = str(target.id)
        resolved: JSON = {"users": {str(target.id): user_payload(target)}}
        guild = self.world.find_guild(guild_id) if guild_id else None
        if guild is not None and target.id in guild.members:
            resolved["members"] = {str(target.id): member_payload(guild.members[target.id], with_user=False)}
        data["resolved"] = resolved
        handle = self.interactions.create(
            APPLICATION_COMMAND, data, user=user or self.member, channel_id=channel_id, command_name=name
        )
        return await self._send(handle)

    def _message_or_error(self: FakeDiscord, message_id: int) -> StoredMessage:
        message = self.store.get(message_id)
        if message is None:
            raise LookupError(f"no live message {message_id}")
        return message

    async def send_component(
        self: FakeDiscord,
        message_id: int,
        custom_id: str,
        *,
        values: list[str] | None = None,
        user: FakeUser | None = None,
        validate: bool = True,
    ) -> InteractionHandle:
        """Use a component on a message: a button click, or a select with `values`."""
        message = self._message_or_error(message_id)
        component = find_component(message.data.get("components") or [], custom_id)
        if component is None and validate:
            ids = [c.get("custom_id") for _, c in walk(message.data.get("components") or [])]
            raise LookupError(f"message {message_id} has no component {custom_id!r}; it has {ids}")
        component = component or {"type": STRING_SELECT if values is not None else BUTTON}
        if validate and component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled")
        data: JSON = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] in SELECTS:
            data["values"] = list(values or [])
            if validate and component["type"] == STRING_SELECT:
                allowed = {o["value"] for o in component.get("options") or []}
                if not set(data["values"]) <= allowed:
                    raise ValueError(f"select {custom_id!r} has no options {set(data['values']) - allowed}")
        handle = self.interactions.create(
            MESSAGE_COMPONENT, data, user=user or self.member, channel_id=message.channel_id, message=message
        )
        return await self._send(handle)

    async def send_button_click(
        self: FakeDiscord, message_id: int, custom_id: str, *, user: FakeUser | None = None, validate: bool = True
    ) -> InteractionHandle:
        """Click a button on a message."""
        return await self.send_component(message_id, custom_id, user=user, validate=validate)

    async def send_select(
        self: FakeDiscord, message_id: int, custom_id: str, values: list[str], *, user: FakeUser | None = None
    ) -> InteractionHandle:
        """Pick `values` in a select menu on a message."""
        return await self.send_component(message_id, custom_id, values=values, user=user)

    async def send_modal_submit(
        self: FakeDiscord,
        custom_id: str,
        values: dict[str, Any],
        *,
        user: FakeUser | None = None,
        opened_by: InteractionHandle | None = None,
        validate: bool = True,
    ) -> InteractionHandle:
        """Submit the modal the bot opened (latest with this custom_id), echoing its layout with `values`."""
        source = opened_by or self.interactions.latest_modal(custom_id)
        if source is None or source.modal is None:
            raise LookupError(f"the bot never opened a modal {custom_id!r}")
        data = {"custom_id": custom_id, "components": modal_submit_components(source.modal, values, validate=validate)}
        message = self.store.get(source.source_message_id) if source.source_message_id else None
        handle = self.interactions.create(
            MODAL_SUBMIT, data, user=user or source.user, channel_id=source.channel_id, message=message
        )
        return await self._send(handle)

    async def post_user_message(
        self: FakeDiscord,
        content: str = "",
        *,
        channel_id: int | None = None,
        user: FakeUser | None = None,
        attachments: list[AttachmentSpec] | None = None,
        reply_to: int | None = None,
        embeds: list[JSON] | None = None,
    ) -> JSON:
        """A user posts (or replies to `reply_to`); the bot gets MESSAGE_CREATE. Returns the message."""
        channel_id = channel_id or self.channel.id
        user = user or self.member
        body: JSON = {"content": content}
        if embeds:
            body["embeds"] = embeds
        if reply_to is not None:
            body["message_reference"] = {"message_id": str(reply_to), "channel_id": str(channel_id)}
        uploads = [
            Upload(f"files[{i}]", spec[0], spec[2] if len(spec) > 2 else "application/octet-stream", spec[1])
            for i, spec in enumerate(attachments or [])
        ]
        found = self.world.find_channel(channel_id)
        if found is not None and found[1] is not None and user.id not in found[1].members:
            raise ValueError(f"{user.username} is not a member of {found[1].name}")
        message = await self.create_message(channel_id, user, body, uploads)
        return copy.deepcopy(message.data)
