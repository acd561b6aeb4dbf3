"""What /imagine-admin show and audit say: every setting with its value, the safety checkers, the changes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bot.config import Config
from bot.moderation.settings import SETTINGS, defaults, show_value
from storage.records import AuditEntry

VALUE_SHOWN = 300


def _clip(text: str, limit: int = VALUE_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def settings_lines(stored: Mapping[str, Any], dm_stored: Mapping[str, Any], config: Config) -> list[str]:
    """One line per setting: key, meaning, value, and whether it is the default."""
    base = defaults(config)
    lines = []
    for key, setting in SETTINGS.items():
        scope = dm_stored if setting.bot_wide else stored
        value = scope.get(key, base[key])
        origin = "default" if key not in scope else "set"
        lines.append(f"`{key}` {setting.label}: **{_clip(show_value(key, value))}** · {origin}")
    return lines


def safety_lines(config: Config, checks: Callable[[str], bool]) -> list[str]:
    """Plainly, for each model, whether NSFW images can be detected at all."""
    lines = []
    for name in config.model_map:
        if checks(name):
            lines.append(f"✅ Model `{name}`: a safety checker flags NSFW images; the `nsfw` policy applies.")
        else:
            lines.append(
                f"⚠️ No safety checker is configured for model `{name}`: NSFW images cannot be detected, "
                "so the `nsfw` policy cannot act on its images."
            )
    return lines


def _audit_value(key: str, value: Any) -> str:
    if value is None:
        return "default"
    try:
        return _clip(show_value(key, value), 120) if key in SETTINGS else _clip(repr(value), 120)
    except (TypeError, ValueError, AttributeError):  # a value written by an older version
        return _clip(repr(value), 120)


def audit_lines(entries: Sequence[AuditEntry]) -> list[str]:
    """Newest first: when, who, which setting, old → new."""
    return [
        f"<t:{int(e.at.timestamp())}:f> <@{e.user_id}> `{e.key}`"
        f"{' (bot-wide)' if SETTINGS.get(e.key) and SETTINGS[e.key].bot_wide else ''}: "
        f"{_audit_value(e.key, e.old)} → {_audit_value(e.key, e.new)}"
        for e in entries
    ]


def fit(lines: Sequence[str], limit: int) -> str:
    """Lines joined, dropping the last ones (with a note) past `limit` characters."""
    text = ""
    for index, line in enumerate(lines):
        candidate = f"{text}\n{line}" if text else line
        if len(candidate) > limit - 40:
            return f"{text}\n… and {len(lines) - index} more."
        text = candidate
    return text
