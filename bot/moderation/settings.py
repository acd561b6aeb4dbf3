"""Every setting a server can change: what it means, its default, and how typed values are read and shown.

Values are stored as JSON in storage (guild_settings, audited). Numeric limits use the field names of
jobs.limits.Limits, so `Limits.with_overrides(stored)` applies them as they are. A server may
only tighten the operator's `[limits]`: no more steps, images or pixels than the config allows, no
shorter cooldown, no larger daily quota; and for LoRA training (/train), no more steps or photos per
training and no more trainings per day.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.config import Config
from bot.moderation.words import usable_entry
from generation.errors import InvalidRequest
from generation.request import MIN_SIDE
from generation.training_inputs import MIN_PHOTOS

DM_SCOPE = 0
"""Settings for direct messages are kept under guild 0, as usage counters are: Discord never issues 0."""

NSFW_POLICIES = {
    "block": "flagged images are not posted",
    "spoiler": "flagged images are posted behind a spoiler",
    "age-restricted": "flagged images are posted only in age-restricted channels, blocked elsewhere",
}
DEFAULT_NSFW = "block"
MAX_NEGATIVE_CHARS = 500
MAX_LIST = 100
MAX_SHARE_WEIGHT = 10.0


class InvalidSetting(InvalidRequest):
    """A value an admin typed does not suit the setting."""


@dataclass(frozen=True)
class Setting:
    """One setting: `key` is stored and typed, `label` is what people read."""

    key: str
    label: str
    kind: str  # how values are read and shown; see parse_value / show_value
    bot_wide: bool = False  # applies to direct messages, so only the bot's owner may change it

    @property
    def is_list(self) -> bool:
        """Changed with add/remove sub-commands rather than `set`."""
        return self.kind in ("channels", "roles", "users", "words", "weights")


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("max_steps", "Most steps per image", "int"),
        Setting("max_pixels", "Largest image (width x height)", "pixels"),
        Setting("max_count", "Most images per request", "int"),
        Setting("max_queued_per_user", "Most jobs one member may have waiting", "int"),
        Setting("daily_images_per_user", "Images per member per day (UTC)", "quota"),
        Setting("cooldown_seconds", "Wait between one member's jobs", "seconds"),
        Setting("channels", "Channels where images can be made", "channels"),
        Setting("roles", "Roles allowed to make images", "roles"),
        Setting("share_roles", "Roles with a larger share of the GPU", "weights"),
        Setting("blocked_users", "Members who may not make images", "users"),
        Setting("banned_words", "Banned words in prompts", "words"),
        Setting("negative_prompt", "Negative prompt added to every job", "text"),
        Setting("nsfw", "Images flagged as NSFW", "nsfw"),
        Setting("default_model", "Model used when none is picked", "model"),
        Setting("dms", "Direct messages served (bot-wide)", "switch", bot_wide=True),
        Setting("training", "Members may train LoRAs with /train", "switch"),
        Setting("train_roles", "Roles allowed to train LoRAs", "roles"),
        Setting("max_train_photos", "Most photos per training", "int"),
        Setting("max_train_steps", "Most steps per training", "int"),
        Setting("daily_trainings_per_user", "Trainings per member per day (UTC)", "quota"),
        Setting("lora_sharing", "Members may share their LoRAs with the server", "switch"),
    )
}
SCALAR_KEYS = [key for key, s in SETTINGS.items() if not s.is_list]


def defaults(config: Config) -> dict[str, Any]:
    """Every setting's value when a server has not changed it."""
    limits = config.limits
    return {
        "max_steps": limits.max_steps,
        "max_pixels": limits.max_pixels,
        "max_count": limits.max_count,
        "max_queued_per_user": limits.max_queued_per_user,
        "daily_images_per_user": limits.daily_images_per_user,
        "cooldown_seconds": limits.cooldown_seconds,
        "channels": [],
        "roles": [],
        "share_roles": {},
        "blocked_users": [],
        "banned_words": [],
        "negative_prompt": "",
        "nsfw": DEFAULT_NSFW,
        "default_model": config.generation.default_model,
        "dms": True,
        "training": True,
        "train_roles": [],
        "max_train_photos": limits.max_train_photos,
        "max_train_steps": limits.max_train_steps,
        "daily_trainings_per_user": limits.daily_trainings_per_user,
        "lora_sharing": True,
    }


def parse_value(key: str, text: str, config: Config) -> Any:
    """The JSON value to store for what an admin typed, or InvalidSetting saying what would be right."""
    setting = SETTINGS[key]
    if setting.is_list:
        raise InvalidSetting(f"`{key}` is a list: change it with its add and remove commands.")
    text = text.strip()
    return _PARSERS[setting.kind](key, text, config)


def _whole(key: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise InvalidSetting(f"`{key}` must be a whole number from {low} to {high}, not '{text[:40]}'.") from None
    if not low <= value <= high:
        raise InvalidSetting(f"`{key}` must be from {low} to {high}, not {value}.")
    return value


_FLOORS = {"max_train_photos": MIN_PHOTOS}  # a training needs at least this many photos


def _int(key: str, text: str, config: Config) -> int:
    ceiling = getattr(config.limits, key)
    return _whole(key, text, _FLOORS.get(key, 1), ceiling)


def _quota(key: str, text: str, config: Config) -> int:
    ceiling = getattr(config.limits, key)
    # When the operator set a quota, servers may lower it but not lift it (0 would mean none).
    return _whole(key, text, 1, ceiling) if ceiling else _whole(key, text, 0, 1_000_000)


_SIZE = re.compile(r"^(\d+)\s*[x×*]\s*(\d+)$", re.IGNORECASE)


def _pixels(key: str, text: str, config: Config) -> int:
    if match := _SIZE.match(text):
        pixels = int(match[1]) * int(match[2])
    else:
        try:
            pixels = int(text.replace(",", "").replace("_", ""))
        except ValueError:
            raise InvalidSetting(
                f"`{key}` is a size such as 768x768, or a number of pixels; not '{text[:40]}'."
            ) from None
    low, high = MIN_SIDE * MIN_SIDE, config.limits.max_pixels
    if not low <= pixels <= high:
        raise InvalidSetting(
            f"`{key}` must be from {low:,} ({MIN_SIDE}x{MIN_SIDE}) to {high:,} pixels, not {pixels:,}."
        )
    return pixels


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?)?$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def _seconds(key: str, text: str, config: Config) -> float:
    match = _DURATION.match(text)
    if not match:
        raise InvalidSetting(f"`{key}` is a duration such as 30, 30s, 5m or 1h; not '{text[:40]}'.")
    seconds = float(match[1]) * _UNIT_SECONDS[(match[2] or "s")[0].lower()]
    floor = config.limits.cooldown_seconds
    if not floor <= seconds <= 86_400:
        raise InvalidSetting(f"`{key}` must be from {floor:g} s to 1 day (86400 s), not {seconds:g} s.")
    return seconds


def _text(key: str, text: str, config: Config) -> str:
    text = " ".join(text.split())
    if not text:
        raise InvalidSetting(f"`{key}` cannot be empty: use reset to remove it.")
    if len(text) > MAX_NEGATIVE_CHARS:
        raise InvalidSetting(f"`{key}` can be at most {MAX_NEGATIVE_CHARS} characters, not {len(text)}.")
    return text


def _nsfw(key: str, text: str, config: Config) -> str:
    value = text.casefold().replace(" ", "-").replace("_", "-")
    if value not in NSFW_POLICIES:
        raise InvalidSetting(f"`{key}` must be one of: {', '.join(NSFW_POLICIES)}; not '{text[:40]}'.")
    return value


def _model(key: str, text: str, config: Config) -> str:
    if text not in config.model_map:
        raise InvalidSetting(f"`{key}` must be one of the models: {', '.join(config.model_map)}; not '{text[:40]}'.")
    return text


_ON = {"on", "yes", "true", "1", "enabled", "enable", "allow", "served"}
_OFF = {"off", "no", "false", "0", "disabled", "disable", "deny", "block"}


def _switch(key: str, text: str, config: Config) -> bool:
    value = text.casefold()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise InvalidSetting(f"`{key}` is on or off, not '{text[:40]}'.")


_PARSERS: dict[str, Callable[[str, str, Config], Any]] = {
    "int": _int,
    "quota": _quota,
    "pixels": _pixels,
    "seconds": _seconds,
    "text": _text,
    "nsfw": _nsfw,
    "model": _model,
    "switch": _switch,
}


def banned_entries(text: str) -> list[str]:
    """Comma-separated words or phrases, each with letters in it (`*` allowed at either end)."""
    entries = [" ".join(part.split()) for part in text.split(",")]
    entries = [e for e in entries if e]
    unusable = [e for e in entries if not usable_entry(e)]
    if not entries or unusable:
        raise InvalidSetting(
            "Give words or phrases separated by commas, each with letters in it"
            + (f" ('{unusable[0][:40]}' has none)." if unusable else ".")
        )
    if any(len(e) > 100 for e in entries):
        raise InvalidSetting("A banned word or phrase can be at most 100 characters.")
    return entries


def with_added(key: str, current: Any, items: list[Any], extra: Mapping[str, Any] | None = None) -> Any:
    """A list setting with items added (a role → weight map for share_roles); refuses growing past MAX_LIST."""
    if key == "share_roles":
        updated = dict(current or {})
        updated.update({str(item): (extra or {})["weight"] for item in items})
    else:
        updated = list(current or [])
        updated += [item for item in items if item not in updated]
    if len(updated) > MAX_LIST:
        raise InvalidSetting(f"`{key}` can hold at most {MAX_LIST} entries.")
    return updated


def with_removed(key: str, current: Any, items: list[Any]) -> tuple[Any, list[Any]]:
    """A list setting without items, and which of them were not in it."""
    current = current or ({} if key == "share_roles" else [])
    if key == "share_roles":
        missing = [item for item in items if str(item) not in current]
        return {k: v for k, v in current.items() if k not in {str(i) for i in items}}, missing
    folded = {str(i).casefold() for i in items}
    missing = [item for item in items if str(item).casefold() not in {str(c).casefold() for c in current}]
    return [c for c in current if str(c).casefold() not in folded], missing


def show_value(key: str, value: Any) -> str:
    """A value as a Discord message shows it (mentions of channels, roles and members do not ping)."""
    kind = SETTINGS[key].kind
    if kind == "channels":
        return ", ".join(f"<#{v}>" for v in value) if value else "all channels"
    if kind == "roles":
        return ", ".join(f"<@&{v}>" for v in value) if value else _NO_ROLES.get(key, "everyone")
    if kind == "users":
        return ", ".join(f"<@{v}>" for v in value) if value else "nobody"
    if kind == "weights":
        return ", ".join(f"<@&{k}> ×{w:g}" for k, w in value.items()) if value else "none (everyone ×1)"
    if kind == "words":
        return ", ".join(f"||{_plain(v)}||" for v in value) if value else "none"
    if kind == "quota":
        return f"{value} {_QUOTA_UNITS[key]}{'s' if value != 1 else ''}" if value else "no quota"
    if kind == "seconds":
        return f"{value:g} s" if value else "none"
    if kind == "pixels":
        side = int(value**0.5)
        return f"{value:,} pixels (about {side}x{side})"
    if kind == "switch":
        return "on" if value else "off"
    if kind == "nsfw":
        return f"{value}: {NSFW_POLICIES.get(value, '?')}"
    if kind == "text":
        return f"`{_plain(value)}`" if value else "none"
    return f"{value}"


_NO_ROLES = {"train_roles": "whoever may make images"}
_QUOTA_UNITS = {"daily_images_per_user": "image", "daily_trainings_per_user": "training"}


def _plain(text: str) -> str:
    # Inside code spans and spoilers: keep the markers that would end them out of the text.
    return str(text).replace("`", "'").replace("||", "| |")
