"""Slash command options as Discord's client sends them: typed by the registered schema, with `resolved`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .commands import (
    ATTACHMENT,
    BOOLEAN,
    CHANNEL,
    INTEGER,
    MENTIONABLE,
    NUMBER,
    ROLE,
    STRING,
    SUB_COMMAND,
    SUB_COMMAND_GROUP,
    USER_OPTION,
)
from .messages import StoredAttachment
from .models import FakeChannel, FakeGuild, FakeRole, FakeUser
from .payloads import JSON, member_payload, role_payload, user_payload

if TYPE_CHECKING:
    from .server import FakeDiscord


class OptionBuilder:
    """Turns `{"prompt": "a cat", "image": ("cat.png", b"...", "image/png")}` into options + resolved."""

    def __init__(self, fake: FakeDiscord, guild: FakeGuild | None, channel_id: int, *, validate: bool) -> None:
        self._fake = fake
        self._guild = guild
        self._channel_id = channel_id
        self._validate = validate
        self.resolved: JSON = {}

    def build(self, command: JSON, path: list[str], values: dict[str, Any]) -> list[JSON]:
        """Options for `/command path...` (sub-command names in `path`)."""
        schema = command.get("options") or []
        if path:
            sub = next((o for o in schema if o["name"] == path[0]), None)
            if sub is None or sub["type"] not in (SUB_COMMAND, SUB_COMMAND_GROUP):
                raise ValueError(f"/{command['name']} has no sub-command {path[0]!r}")
            inner = self.build(sub, path[1:], values)
            return [{"name": sub["name"], "type": sub["type"], "options": inner}]
        if any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in schema):
            raise ValueError(f"/{command['name']} needs a sub-command: pass 'name sub' as the command name")
        by_name = {o["name"]: o for o in schema}
        unknown = set(values) - set(by_name)
        if unknown:
            raise ValueError(f"/{command['name']} has no options {sorted(unknown)}; it has {sorted(by_name)}")
        missing = [o["name"] for o in schema if o.get("required") and o["name"] not in values]
        if missing and self._validate:
            raise ValueError(f"/{command['name']} is missing required options {missing}")
        return [self._option(o, values[o["name"]]) for o in schema if o["name"] in values]

    def _option(self, schema: JSON, value: Any) -> JSON:
        kind = schema["type"]
        if kind in (STRING, INTEGER, NUMBER, BOOLEAN):
            value = self._scalar(schema, value)
        elif kind == ATTACHMENT:
            value = self._attachment(value)
        elif kind == USER_OPTION:
            value = self._user(value)
        elif kind == ROLE:
            value = self._role(value)
        elif kind == MENTIONABLE:
            value = self._role(value) if isinstance(value, FakeRole) or self._is_role(value) else self._user(value)
        elif kind == CHANNEL:
            value = self._channel(value)
        return {"name": schema["name"], "type": kind, "value": value}

    def _scalar(self, schema: JSON, value: Any) -> Any:
        kind = schema["type"]
        name = schema["name"]
        expected: dict[int, tuple[type, ...]] = {
            STRING: (str,),
            INTEGER: (int,),
            NUMBER: (int, float),
            BOOLEAN: (bool,),
        }
        if (isinstance(value, bool) and kind != BOOLEAN) or not isinstance(value, expected[kind]):
            raise ValueError(f"option {name!r} wants {expected[kind][0].__name__}, got {value!r}")
        if not self._validate:
            return value
        choices = schema.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise ValueError(f"option {name!r}: {value!r} is not one of the choices {choices}")
        if kind == STRING:
            if not schema.get("min_length", 0) <= len(value) <= schema.get("max_length", 6000):
                raise ValueError(f"option {name!r}: length {len(value)} is outside the allowed range")
        elif kind in (INTEGER, NUMBER):
            low, high = schema.get("min_value", -math.inf), schema.get("max_value", math.inf)
            if not low <= value <= high:
                raise ValueError(f"option {name!r}: {value} is outside [{low}, {high}]")
        return value

    def _attachment(self, value: Any) -> str:
        if isinstance(value, StoredAttachment):
            attachment = value
        else:
            filename, data, *rest = value
            attachment = self._fake.store.add_attachment(
                self._channel_id, filename, data, rest[0] if rest else None, ephemeral=True
            )
        payload = attachment.payload(self._fake.base_url)
        self.resolved.setdefault("attachments", {})[str(attachment.id)] = payload
        return str(attachment.id)

    def _is_role(self, value: Any) -> bool:
        return isinstance(value, int) and self._guild is not None and any(r.id == value for r in self._guild.roles)

    def _user(self, value: FakeUser | int) -> str:
        user = value if isinstance(value, FakeUser) else self._fake.world.users[value]
        self.resolved.setdefault("users", {})[str(user.id)] = user_payload(user)
        if self._guild is not None and user.id in self._guild.members:
            channel = self._fake.world.find_channel(self._channel_id)
            perms = self._guild.permissions_in(user.id, channel[0] if channel else None)
            member = member_payload(self._guild.members[user.id], with_user=False, permissions=perms)
            self.resolved.setdefault("members", {})[str(user.id)] = member
        return str(user.id)

    def _role(self, value: FakeRole | int) -> str:
        if self._guild is None:
            raise ValueError("role options need a guild")
        role_id = value.id if isinstance(value, FakeRole) else value
        role = next(r for r in self._guild.roles if r.id == role_id)
        self.resolved.setdefault("roles", {})[str(role.id)] = role_payload(role)
        return str(role.id)

    def _channel(self, value: FakeChannel | int) -> str:
        channel_id = value.id if isinstance(value, FakeChannel) else value
        found = self._fake.world.find_channel(channel_id)
        if found is None:
            raise ValueError(f"unknown channel {channel_id}")
        channel, guild = found
        perms = guild.permissions_in(self._fake.bot_user.id, channel) if guild else 0
        self.resolved.setdefault("channels", {})[str(channel.id)] = {
            "id": str(channel.id),
            "name": channel.name,
            "type": channel.type,
            "permissions": str(perms),
            "parent_id": str(channel.parent_id) if channel.parent_id else None,
            "flags": 0,
        }
        return str(channel.id)


def autocomplete_options(
    command: JSON, values: dict[str, Any], focused: str, path: list[str] | None = None
) -> list[JSON]:
    """What the client sends while a user types: raw values, the focused one marked (strings only); inside
    the sub-command `path` names, nested as Discord nests them."""
    if path:
        sub = next((o for o in command.get("options") or [] if o["name"] == path[0]), None)
        if sub is None or sub["type"] not in (SUB_COMMAND, SUB_COMMAND_GROUP):
            raise ValueError(f"/{command['name']} has no sub-command {path[0]!r}")
        inner = autocomplete_options(sub, values, focused, path[1:])
        return [{"name": sub["name"], "type": sub["type"], "options": inner}]
    by_name = {o["name"]: o for o in command.get("options") or []}
    if focused not in by_name:
        raise ValueError(f"/{command['name']} has no option {focused!r}")
    if not by_name[focused].get("autocomplete"):
        raise ValueError(f"option {focused!r} of /{command['name']} does not have autocomplete")
    options = []
    for name, value in values.items():
        schema = by_name[name]
        option: JSON = {"name": name, "type": schema["type"], "value": str(value) if name == focused else value}
        if name == focused:
            option["focused"] = True
        options.append(option)
    if focused not in values:
        options.append({"name": focused, "type": by_name[focused]["type"], "value": "", "focused": True})
    return options
