"""Interactions a test sends as a user, and the handle that follows each one's responses."""

from __future__ import annotations

import asyncio
import copy
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .messages import LOADING, StoredMessage
from .models import FakeChannel, FakeGuild, FakeUser
from .payloads import JSON, channel_payload, member_payload, user_payload

if TYPE_CHECKING:
    from .server import FakeDiscord

PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE = 4, 5, 6, 7
AUTOCOMPLETE_RESULT, MODAL = 8, 9


@dataclass
class InteractionHandle:
    """One interaction sent to the bot: its payload and everything the bot answered with."""

    fake: FakeDiscord = field(repr=False)
    id: int
    token: str = field(repr=False)
    type: int
    payload: JSON = field(repr=False)
    user: FakeUser
    channel_id: int
    guild_id: int | None
    created_at: float
    command_name: str | None = None
    source_message_id: int | None = None
    response_type: int | None = None
    callback: JSON | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    modal: JSON | None = None
    choices: list[JSON] | None = None

    @property
    def acknowledged(self) -> bool:
        """Whether the bot answered the callback."""
        return self.response_type is not None

    @property
    def original(self) -> JSON | None:
        """The current @original message (None before a message response, or once deleted)."""
        message = self.fake.store.get(self.original_message_id) if self.original_message_id else None
        return copy.deepcopy(message.data) if message else None

    @property
    def followups(self) -> list[JSON]:
        """Follow-up messages that still exist, oldest first."""
        found = (self.fake.store.get(i) for i in self.followup_ids)
        return [copy.deepcopy(m.data) for m in found if m is not None]

    @property
    def messages(self) -> list[JSON]:
        """@original (if any) then the follow-ups."""
        original = self.original
        return ([original] if original else []) + self.followups

    async def wait_for_callback(self, timeout: float = 5.0) -> JSON:
        """The callback body `{"type", "data"}` once the bot answered."""
        return await self.fake.signal.wait_for(
            lambda: self.callback, timeout, f"interaction {self.id} ({self.command_name}) was never answered"
        )

    async def wait_for_message(self, predicate: Callable[[JSON], Any] = bool, timeout: float = 5.0) -> JSON:
        """The first of @original/follow-ups matching `predicate` (default: any finished message)."""

        def probe() -> JSON | None:
            for message in self.messages:
                if not message["flags"] & LOADING and predicate(message):
                    return message
            return None

        return await self.fake.signal.wait_for(
            probe, timeout, lambda: f"interaction {self.id} messages so far: {self.messages}"
        )

    async def wait_for_original(self, predicate: Callable[[JSON], Any] = bool, timeout: float = 5.0) -> JSON:
        """@original once it is no longer loading and matches `predicate`."""

        def probe() -> JSON | None:
            original = self.original
            if original and not original["flags"] & LOADING and predicate(original):
                return original
            return None

        return await self.fake.signal.wait_for(probe, timeout, lambda: f"@original is {self.original}")

    async def wait_for_followup(self, index: int = 0, timeout: float = 5.0) -> JSON:
        """The follow-up at `index` (0 = first) once it exists."""

        def probe() -> JSON | None:
            followups = self.followups
            return followups[index] if len(followups) > index else None

        return await self.fake.signal.wait_for(probe, timeout, lambda: f"follow-ups so far: {self.followups}")

    async def wait_for_modal(self, timeout: float = 5.0) -> JSON:
        """The modal the bot opened in response."""
        return await self.fake.signal.wait_for(lambda: self.modal, timeout, f"no modal for interaction {self.id}")

    async def wait_for_choices(self, timeout: float = 5.0) -> list[JSON]:
        """Autocomplete choices the bot answered with."""
        return await self.fake.signal.wait_for(lambda: self.choices, timeout, "no autocomplete result")


class InteractionFactory:
    """Builds INTERACTION_CREATE payloads the way Discord's client and API would."""

    def __init__(self, fake: FakeDiscord) -> None:
        self._fake = fake
        self.handles: dict[int, InteractionHandle] = {}

    def create(
        self,
        kind: int,
        data: JSON,
        *,
        user: FakeUser,
        channel_id: int,
        command_name: str | None = None,
        message: StoredMessage | None = None,
    ) -> InteractionHandle:
        """Register a handle and build its payload (guild member or DM user, channel, permissions)."""
        fake = self._fake
        found = fake.world.find_channel(channel_id)
        if found is None:
            raise ValueError(f"unknown channel {channel_id}")
        channel, guild = found
        interaction_id = fake.ids.next()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        payload: JSON = {
            "id": str(interaction_id),
            "application_id": str(fake.application_id),
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": fake.store.attachment_size_limit,
            "channel_id": str(channel.id),
        }
        if guild is not None:
            self._add_guild_context(payload, guild, channel, user)
        else:
            payload.update(
                user=user_payload(user),
                channel=channel_payload(channel),
                app_permissions=str(fake.dm_permissions),
                authorizing_integration_owners={"0": "0"},  # guild-installed app, in the bot's DM
                context=1,
            )
        if message is not None:
            payload["message"] = copy.deepcopy(message.data)
        handle = InteractionHandle(
            fake,
            interaction_id,
            token,
            kind,
            payload,
            user,
            channel.id,
            guild.id if guild else None,
            asyncio.get_running_loop().time(),
            command_name=command_name,
            source_message_id=message.id if message else None,
        )
        self.handles[interaction_id] = handle
        return handle

    def _add_guild_context(self, payload: JSON, guild: FakeGuild, channel: FakeChannel, user: FakeUser) -> None:
        member = guild.members.get(user.id)
        if member is None:
            raise ValueError(f"{user.username} is not a member of {guild.name}")
        bot_id = self._fake.bot_user.id
        payload.update(
            guild_id=str(guild.id),
            guild={"id": str(guild.id), "locale": guild.preferred_locale, "features": []},
            guild_locale=guild.preferred_locale,
            member=member_payload(member, permissions=guild.permissions_in(user.id, channel)),
            channel=channel_payload(channel, permissions=guild.permissions_in(user.id, channel)),
            app_permissions=str(guild.permissions_in(bot_id, channel)),
            authorizing_integration_owners={"0": str(guild.id)},
            context=0,
        )

    def by_token(self, token: str) -> InteractionHandle | None:
        """The interaction a webhook token belongs to."""
        return next((h for h in self.handles.values() if h.token == token), None)

    def latest_modal(self, custom_id: str) -> InteractionHandle | None:
        """The most recent interaction answered with a modal of this custom_id."""
        for handle in reversed(list(self.handles.values())):
            if handle.modal is not None and handle.modal.get("custom_id") == custom_id:
                return handle
        return None
