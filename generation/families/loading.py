"""Where a model's weights come from (hub id, local diffusers directory, single file), with errors users can act on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from generation.errors import ModelUnavailable
from generation.families.dalle_layout import DALLE_KINDS, missing_reason
from generation.specs import SINGLE_FILE_SUFFIXES, ModelSpec

T = TypeVar("T")


def is_local_path(source: str) -> bool:
    """Whether a source names something on this machine rather than a hub id."""
    return source.startswith(("/", ".", "~")) or Path(source).exists() or source.endswith(SINGLE_FILE_SUFFIXES)


def unavailable(spec: ModelSpec, reason: str) -> ModelUnavailable:
    """The refusal for a model that cannot be loaded, saying how to fix it."""
    return ModelUnavailable(
        f"Model '{spec.name}' could not be loaded from '{spec.source}': {reason}. "
        "Download it on a machine with internet access (e.g. `hf download <id> --local-dir DIR`) and set "
        '`source = "DIR"` for this model in the config, or write a small test model with '
        f"`imagine-bot tiny-model DIR --kind {spec.kind}`."
    )


def check_source(spec: ModelSpec) -> None:
    """Refuse a local source that is not there, before any loading (cheap: used at start-up)."""
    source = spec.source
    if spec.kind in DALLE_KINDS:  # min-dalle's files in a local directory, not diffusers'
        reason = missing_reason(source, spec.kind)
        if reason:
            raise unavailable(spec, reason)
        return
    if source.endswith(SINGLE_FILE_SUFFIXES):
        if not Path(source).expanduser().is_file():
            raise unavailable(spec, "no such file")
    elif is_local_path(source) and not (Path(source).expanduser() / "model_index.json").is_file():
        reason = "no such directory" if not Path(source).expanduser().exists() else "no model_index.json in it"
        raise unavailable(spec, f"it is not a diffusers directory ({reason})")


def load_pretrained(spec: ModelSpec, load: Callable[[str], T]) -> T:
    """Call `load(path or hub id)`, turning missing or unreachable weights into ModelUnavailable."""
    check_source(spec)
    source = str(Path(spec.source).expanduser()) if is_local_path(spec.source) else spec.source
    try:
        return load(source)
    except (OSError, ValueError) as exc:
        # Offline, a hub id that is not cached ends here (LocalEntryNotFoundError is an OSError).
        text = str(exc).strip()
        first_line = text.splitlines()[0] if text else type(exc).__name__
        raise unavailable(spec, f"it is not a local directory and could not be downloaded ({first_line})") from exc
