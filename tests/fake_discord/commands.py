"""Registered application commands: Discord's validation rules, bulk overwrite and lookup by name."""

from __future__ import annotations

import copy
import re
from typing import Any

from .errors import RestError, form_error
from .models import SnowflakeGenerator

JSON = dict[str, Any]
CHAT_INPUT, USER, MESSAGE = 1, 2, 3
SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER_OPTION, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11
NAME_RE = re.compile(r"^[-_'\w]{1,32}$")


def _check_name(path: list[str | int], name: Any, *, chat_input: bool) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= 32:
        raise form_error([*path, "name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
    if chat_input and (not NAME_RE.match(name) or name != name.lower()):
        raise form_error([*path, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")


def _check_description(path: list[str | int], description: Any) -> None:
    if not isinstance(description, str) or not 1 <= len(description) <= 100:
        raise form_error([*path, "description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")


def _check_options(path: list[str | int], options: list[JSON], depth: int) -> None:
    if len(options) > 25:
        raise form_error([*path, "options"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    names: set[str] = set()
    seen_optional = False
    for index, option in enumerate(options):
        here = [*path, "options", index]
        _check_name(here, option.get("name"), chat_input=True)
        _check_description(here, option.get("description"))
        if option["name"] in names:
            raise form_error(
                [*here, "name"], "APPLICATION_COMMAND_OPTION_NAME_ALREADY_EXISTS", "Option names must be unique"
            )
        names.add(option["name"])
        kind = option.get("type")
        if kind in (SUB_COMMAND, SUB_COMMAND_GROUP):
            if depth >= (2 if kind == SUB_COMMAND else 1):
                raise form_error([*here, "type"], "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID", "Too deeply nested")
            _check_options(here, option.get("options") or [], depth + 1)
            continue
        if kind not in range(3, 12):
            raise form_error([*here, "type"], "BASE_TYPE_CHOICES", f"Value must be one of (1..11), not {kind}.")
        if option.get("required"):
            if seen_optional:
                raise form_error(
                    [*here, "required"],
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        choices = option.get("choices") or []
        if choices and option.get("autocomplete"):
            raise form_error(
                [*here, "autocomplete"],
                "APPLICATION_COMMAND_OPTION_AUTOCOMPLETE_AND_CHOICES",
                "Autocomplete and choices cannot both be set",
            )
        if len(choices) > 25:
            raise form_error([*here, "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")


def validate_command(path: list[str | int], payload: JSON) -> None:
    """Names, descriptions and options the way Discord checks them on registration."""
    kind = payload.get("type", CHAT_INPUT)
    chat_input = kind == CHAT_INPUT
    _check_name(path, payload.get("name"), chat_input=chat_input)
    if chat_input:
        _check_description(path, payload.get("description"))
        _check_options(path, payload.get("options") or [], 0)
    elif payload.get("description"):
        raise form_error([*path, "description"], "BASE_TYPE_MAX_LENGTH", "Context menu commands have no description")


class CommandStore:
    """Global and per-guild commands, keeping ids stable across re-syncs of the same name."""

    def __init__(self, ids: SnowflakeGenerator, application_id: int) -> None:
        self._ids = ids
        self._application_id = application_id
        self.scopes: dict[int | None, dict[int, JSON]] = {None: {}}

    def _scope(self, guild_id: int | None) -> dict[int, JSON]:
        return self.scopes.setdefault(guild_id, {})

    def _build(self, payload: JSON, guild_id: int | None, command_id: int) -> JSON:
        kind = payload.get("type", CHAT_INPUT)
        command: JSON = {
            "id": str(command_id),
            "application_id": str(self._application_id),
            "version": str(self._ids.next()),
            "type": kind,
            "name": payload["name"],
            "name_localizations": payload.get("name_localizations"),
            "description": payload.get("description", "") if kind == CHAT_INPUT else "",
            "description_localizations": payload.get("description_localizations"),
            "default_member_permissions": payload.get("default_member_permissions"),
            "dm_permission": payload.get("dm_permission", True),
            "contexts": payload.get("contexts"),
            "integration_types": payload.get("integration_types") or [0],
            "nsfw": payload.get("nsfw", False),
        }
        if kind == CHAT_INPUT and payload.get("options"):
            command["options"] = copy.deepcopy(payload["options"])
        if guild_id is not None:
            command["guild_id"] = str(guild_id)
        return command

    def overwrite(self, guild_id: int | None, payloads: list[JSON]) -> list[JSON]:
        """PUT: replace the scope's commands; a (name, type) already registered keeps its id."""
        if not isinstance(payloads, list):
            raise RestError(400, 50035, "Invalid Form Body")
        seen: set[tuple[str, int]] = set()
        for index, payload in enumerate(payloads):
            validate_command([index], payload)
            key = (payload["name"], payload.get("type", CHAT_INPUT))
            if key in seen:
                message = f"Application command names must be unique: {key[0]}"
                raise form_error([index, "name"], "APPLICATION_COMMANDS_DUPLICATE_NAME", message)
            seen.add(key)
        old = {(c["name"], c["type"]): int(c["id"]) for c in self._scope(guild_id).values()}
        fresh: dict[int, JSON] = {}
        for payload in payloads:
            key = (payload["name"], payload.get("type", CHAT_INPUT))
            command_id = old.get(key) or self._ids.next()
            fresh[command_id] = self._build(payload, guild_id, command_id)
        self.scopes[guild_id] = fresh
        return [copy.deepcopy(c) for c in fresh.values()]

    def upsert(self, guild_id: int | None, payload: JSON) -> tuple[JSON, bool]:
        """POST: create, or replace the command with the same name and type; True when created."""
        validate_command([], payload)
        key = (payload["name"], payload.get("type", CHAT_INPUT))
        scope = self._scope(guild_id)
        existing = next((int(c["id"]) for c in scope.values() if (c["name"], c["type"]) == key), None)
        command_id = existing or self._ids.next()
        scope[command_id] = self._build(payload, guild_id, command_id)
        return copy.deepcopy(scope[command_id]), existing is None

    def edit(self, guild_id: int | None, command_id: int, changes: JSON) -> JSON:
        """PATCH: change some fields of one command."""
        current = self.get(guild_id, command_id)
        merged = {**current, **changes}
        validate_command([], merged)
        self._scope(guild_id)[command_id] = self._build(merged, guild_id, command_id)
        return copy.deepcopy(self._scope(guild_id)[command_id])

    def delete(self, guild_id: int | None, command_id: int) -> None:
        """DELETE: forget one command."""
        self.get(guild_id, command_id)
        del self._scope(guild_id)[command_id]

    def get(self, guild_id: int | None, command_id: int) -> JSON:
        """One command or 404 Unknown application command."""
        command = self._scope(guild_id).get(command_id)
        if command is None:
            raise RestError(404, 10063, "Unknown application command")
        return copy.deepcopy(command)

    def list(self, guild_id: int | None) -> list[JSON]:
        """All commands of a scope."""
        return [copy.deepcopy(c) for c in self._scope(guild_id).values()]

    def find(self, name: str, guild_id: int | None, kind: int = CHAT_INPUT) -> JSON | None:
        """What a user in `guild_id` would pick: the guild's command first, then the global one."""
        scopes = [guild_id, None] if guild_id is not None else [None]
        for scope in scopes:
            for command in self.scopes.get(scope, {}).values():
                if command["name"] == name and command["type"] == kind:
                    return command
        return None
