"""LoRAs in prompts: A1111's `<lora:NAME:WEIGHT>` tags, the names they resolve to, and A1111's file hash.

Cheap to import (no torch): the bot parses tags at the edge, before any GPU work. Tags stay in the prompt
text, as A1111 keeps them (the PNG parameters carry them); families strip them before encoding.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from generation.errors import InvalidRequest
from generation.specs import LoraSpec

MAX_LORA_WEIGHT = 5.0  # sliders go to about ±5; past that a LoRA only breaks the picture
# `<lora:NAME>` or `<lora:NAME:WEIGHT>`; A1111's extra arguments (`:te:unet`, `dyn=`) are refused by name.
LORA_TAG = re.compile(r"<lora:([^<>]*)>", re.IGNORECASE)
_TAG_AND_SPACE = re.compile(r"\s*<lora:[^<>]*>\s*", re.IGNORECASE)
_SHOWN = 40
# What a LoRA name cannot hold: the tag's own delimiters, and `#` (trained LoRAs go by NAME#ID).
NAME_FORBIDDEN = frozenset(':<>,"`#')

Given = tuple[str, float | None]  # a LoRA as asked for: its name, its weight if one was given


def shown(text: str) -> str:
    """Text typed by a person, fit to quote back in a message (no backticks, at most 40 characters)."""
    text = text.replace("`", "'")
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def format_weight(weight: float) -> str:
    """A weight as it is written back into a tag (0.8, 1, -0.5)."""
    return f"{weight:g}"


def parse_weight(text: str, name: str) -> float:
    """A LoRA weight typed by a person, or a refusal naming the LoRA and the range."""
    try:
        weight = float(text.strip().replace(",", ".") if text.count(",") == 1 and "." not in text else text)
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight):
        raise InvalidRequest(f"The weight of LoRA '{shown(name)}' must be a number such as 0.8, not '{shown(text)}'.")
    check_weight(name, weight)
    return weight


def check_weight(name: str, weight: float) -> None:
    """Refuse a weight outside ±MAX_LORA_WEIGHT, naming the LoRA."""
    if not (math.isfinite(weight) and -MAX_LORA_WEIGHT <= weight <= MAX_LORA_WEIGHT):
        raise InvalidRequest(
            f"The weight of LoRA '{shown(name)}' must be between -{MAX_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}, "
            f"not {weight:g}."
        )


def lora_tags(prompt: str) -> list[Given]:
    """Every `<lora:…>` tag in a prompt, in order, as (name, weight or None)."""
    found: list[Given] = []
    for match in LORA_TAG.finditer(prompt):
        parts = [p.strip() for p in match[1].split(":")]
        name = parts[0]
        if not name:
            raise InvalidRequest(f"`{shown(match[0])}` names no LoRA: write it as `<lora:NAME:0.8>`.")
        if len(parts) > 2:
            raise InvalidRequest(
                f"`{shown(match[0])}` has more than a name and a weight; write it as `<lora:{shown(name)}:0.8>`."
            )
        found.append((name, parse_weight(parts[1], name) if len(parts) == 2 and parts[1] else None))
    return found


def strip_lora_tags(prompt: str) -> str:
    """The prompt without its `<lora:…>` tags, for the text encoders; a prompt without tags is left as it is."""
    if not LORA_TAG.search(prompt):
        return prompt
    return _TAG_AND_SPACE.sub(" ", prompt).strip()


def tag(name: str, weight: float) -> str:
    """The tag A1111 writes for a LoRA."""
    return f"<lora:{name}:{format_weight(weight)}>"


def canonical(name: str, known: Mapping[str, LoraSpec]) -> str:
    """The name a typed LoRA name stands for (a member's trained LoRA by its plain name: its unique name);
    an unknown name is kept as typed, for the catalog to refuse by name."""
    return known[name].name if name in known else name


def resolve(given: Iterable[Given], known: Mapping[str, LoraSpec]) -> tuple[tuple[str, float], ...]:
    """Canonical names and weights sorted by name, a missing weight the LoRA's default (1 for an unknown name:
    the catalog refuses it by name); a LoRA given twice with different weights is refused."""
    chosen: dict[str, float] = {}
    for name, weight in given:
        value = weight if weight is not None else known[name].weight if name in known else 1.0
        key = canonical(name, known)
        if key in chosen and chosen[key] != value:
            raise InvalidRequest(
                f"The LoRA '{shown(name)}' is given twice, with weights {format_weight(chosen[key])} and "
                f"{format_weight(value)}: keep one."
            )
        chosen[key] = value
    return tuple(sorted(chosen.items()))


def _canonical_tags(prompt: str, known: Mapping[str, LoraSpec]) -> str:
    """The prompt with each tag naming its LoRA by canonical name; untouched when every tag already does."""

    def rewrite(match: re.Match[str]) -> str:
        parts = [p.strip() for p in match[1].split(":")]
        name = canonical(parts[0], known)
        if name == parts[0]:
            return match[0]
        weight = parse_weight(parts[1], parts[0]) if len(parts) == 2 and parts[1] else None
        return f"<lora:{name}>" if weight is None else tag(name, weight)

    return LORA_TAG.sub(rewrite, prompt)


def loras_for_prompt(
    prompt: str, extra: Sequence[Given], known: Mapping[str, LoraSpec]
) -> tuple[str, tuple[tuple[str, float], ...]]:
    """The prompt with its tags naming each LoRA by canonical name and a tag for each LoRA given beside it (so
    the prompt says every LoRA used, as in A1111), and the LoRAs of all its tags."""
    tags = lora_tags(prompt)
    in_prompt = dict(resolve(tags, known))
    # Beside a tag of the same LoRA, a name without a weight adds nothing; with another weight it is refused.
    beside = [(name, weight) for name, weight in extra if not (canonical(name, known) in in_prompt and weight is None)]
    loras = resolve([*tags, *beside], known)
    added = [tag(name, weight) for name, weight in loras if name not in in_prompt]
    prompt = _canonical_tags(prompt, known) if tags else prompt
    return (" ".join([prompt.strip(), *added]) if added else prompt), loras


def closest(name: str, names: Iterable[str]) -> list[str]:
    """Up to three known names like the one typed (case ignored)."""
    by_folded = {n.casefold(): n for n in names}
    return [by_folded[n] for n in difflib.get_close_matches(name.casefold(), list(by_folded), n=3, cutoff=0.5)]


def weights_file(spec: LoraSpec) -> Path | None:
    """The weights file of a LoRA on this machine (the hub cache for a hub id), if it can be found."""
    path = Path(spec.source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if spec.weight_name:
            return path / spec.weight_name if (path / spec.weight_name).is_file() else None
        files = sorted(path.glob("*.safetensors"))
        return files[0] if len(files) == 1 else None  # several: diffusers would refuse to guess too
    if spec.source.startswith(("/", ".", "~")):
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(spec.source, spec.weight_name or "pytorch_lora_weights.safetensors")
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def a1111_short_hash(path: Path) -> str:
    """A1111's LoRA short hash: 12 hex digits of the sha256 of a .safetensors file's tensor data (the header
    left out: kohya's `addnet` hash, Civitai's AutoV3), or of the whole file for other formats."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        if path.suffix.lower() == ".safetensors":
            header = int.from_bytes(file.read(8), "little")
            file.seek(8 + header)
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
