"""Message and modal components: Discord's limits, lookup by custom_id, modal submit data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .errors import form_error

JSON = dict[str, Any]

ACTION_ROW = 1
BUTTON = 2
STRING_SELECT = 3
TEXT_INPUT = 4
SELECTS = {3, 5, 6, 7, 8}
LINK_STYLE = 5
PREMIUM_STYLE = 6
LABEL = 18
FILE_UPLOAD = 19


def walk(components: list[JSON]) -> Iterator[tuple[list[str | int], JSON]]:
    """Every component (depth first) with its form-error path."""

    def visit(items: list[JSON], path: list[str | int]) -> Iterator[tuple[list[str | int], JSON]]:
        for index, item in enumerate(items):
            here = [*path, index]
            yield here, item
            if "components" in item:
                yield from visit(item["components"], [*here, "components"])
            if "component" in item:
                yield [*here, "component"], item["component"]
            if "accessory" in item:
                yield [*here, "accessory"], item["accessory"]

    yield from visit(components, ["components"])


def find_component(components: list[JSON], custom_id: str) -> JSON | None:
    """The component with this custom_id, or None."""
    return next((c for _, c in walk(components) if c.get("custom_id") == custom_id), None)


def validate_components(components: list[JSON], *, v2: bool) -> None:
    """Rows of at most 5 buttons or 1 select, custom_ids of 1-100 unique characters, labels up to 80."""
    if not v2:
        if len(components) > 5:
            raise form_error(["components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        for index, row in enumerate(components):
            if row.get("type") != ACTION_ROW:
                raise form_error(
                    ["components", index, "type"],
                    "UNION_TYPE_CHOICES",
                    "Top-level components must be action rows unless the message is components v2.",
                )
            children = row.get("components") or []
            has_select = any(c.get("type") in SELECTS for c in children)
            if not children or len(children) > 5 or (has_select and len(children) > 1):
                raise form_error(
                    ["components", index, "components"],
                    "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                    "The specified component exceeds the maximum width",
                )
    seen: set[str] = set()
    for path, item in walk(components):
        kind = item.get("type")
        custom_id = item.get("custom_id")
        if kind == BUTTON:
            style = item.get("style")
            if style == LINK_STYLE:
                if not item.get("url") or custom_id is not None:
                    raise form_error(path, "BUTTON_COMPONENT_INVALID_URL", "Link buttons need a url and no custom_id.")
            elif style != PREMIUM_STYLE and custom_id is None:
                raise form_error([*path, "custom_id"], "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED", "A custom id is required")
            if len(item.get("label") or "") > 80:
                raise form_error([*path, "label"], "BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length.")
        if kind in SELECTS and kind == STRING_SELECT and not 1 <= len(item.get("options") or []) <= 25:
            raise form_error([*path, "options"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length.")
        if custom_id is not None:
            if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
                raise form_error([*path, "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            if custom_id in seen:
                raise form_error(
                    [*path, "custom_id"], "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated"
                )
            seen.add(custom_id)


def validate_modal(data: JSON) -> None:
    """A modal needs a custom_id, a title of at most 45 characters and 1-5 top-level components."""
    if not 1 <= len(data.get("custom_id") or "") <= 100:
        raise form_error(["data", "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    if not 1 <= len(data.get("title") or "") <= 45:
        raise form_error(["data", "title"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
    components = data.get("components") or []
    if not 1 <= len(components) <= 5:
        raise form_error(["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
    validate_components(components, v2=True)


def modal_submit_components(modal: JSON, values: dict[str, Any], *, validate: bool = True) -> list[JSON]:
    """What Discord sends back on submit: the modal's layout (rows or labels) with the user's values."""
    known = {c.get("custom_id") for _, c in walk(modal.get("components") or []) if c.get("custom_id")}
    unknown = set(values) - known
    if validate and unknown:
        raise ValueError(f"modal {modal.get('custom_id')!r} has no inputs {sorted(unknown)}; it has {sorted(known)}")

    def submitted(item: JSON) -> JSON | None:
        custom_id = item.get("custom_id")
        kind = item.get("type")
        if kind == TEXT_INPUT:
            value = values.get(custom_id, item.get("value") or "")
            if validate:
                check_text_input(item, value)
            return {"type": TEXT_INPUT, "custom_id": custom_id, "value": value}
        if kind in SELECTS or kind == FILE_UPLOAD:
            chosen = values.get(custom_id, [])
            return {"type": kind, "custom_id": custom_id, "values": list(chosen)}
        return None

    result: list[JSON] = []
    for item in modal.get("components") or []:
        if item.get("type") == ACTION_ROW:
            inner = [s for s in (submitted(c) for c in item.get("components") or []) if s is not None]
            result.append({"type": ACTION_ROW, "components": inner})
        elif item.get("type") == LABEL:
            inner_item = submitted(item["component"])
            if inner_item is not None:
                result.append({"type": LABEL, "component": inner_item})
        else:
            result.append({"type": item.get("type")})
    return result


def check_text_input(item: JSON, value: str) -> None:
    """The Discord client enforces required and min/max length before a user can submit."""
    if item.get("required", True) and not value:
        raise ValueError(f"text input {item.get('custom_id')!r} is required")
    if value and not item.get("min_length", 0) <= len(value) <= item.get("max_length", 4000):
        raise ValueError(f"text input {item.get('custom_id')!r} length {len(value)} is out of bounds")
