"""Midjourney-style `--flags` typed after a prompt: parsed out of the text, the rest is the prompt.

`make it winter --strength 0.4 --seed 9 --no snow, people` → prompt "make it winter", strength 0.4,
seed 9, negative "snow, people". Number flags take one word (anything after it stays in the prompt);
text flags (`--no`, `--model`, `--sampler`) take every word up to the next flag, quotes optional.
An em dash counts as `--`, because phones turn `--` into `—`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from generation.errors import InvalidRequest

if TYPE_CHECKING:
    from generation.options import UserOptions

_TOKEN = re.compile(r'"[^"]*"|“[^”]*”|\S+')
_FLAG = re.compile(r"^(?:--|—)([A-Za-z][\w-]*)$")
_SHOWN_VALUE = 40

# flag as typed → (field, kind); kinds: int, float, text (rest until next flag), word (one word)
_FLAGS: dict[str, tuple[str, str]] = {
    "strength": ("strength", "float"),
    "seed": ("seed", "int"),
    "no": ("negative", "text"),
    "steps": ("steps", "int"),
    "guidance": ("guidance", "float"),
    "cfg": ("guidance", "float"),
    "size": ("size", "word"),
    "ar": ("size", "word"),
    "aspect": ("size", "word"),
    "model": ("model", "text"),
    "sampler": ("sampler", "text"),
    "count": ("count", "int"),
}


class FlagError(InvalidRequest):
    """A flag was unknown, had no value, or had a value of the wrong kind; the message names it."""


@dataclass(frozen=True)
class PromptFlags:
    """What a person asked for: typed as `--flags`, as /imagine's options or as `generate`'s arguments.

    None means not given (the model's default applies).
    """

    prompt: str
    negative: str = ""
    strength: float | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    size: str | None = None
    model: str | None = None
    sampler: str | None = None
    count: int | None = None
    loras: tuple[tuple[str, float | None], ...] = ()  # beside the prompt; `<lora:…>` tags stay in it

    def options(self, image: bytes | None = None, mask: bytes | None = None) -> UserOptions:
        """The options to build a request from (the model's name is looked up separately)."""
        from generation.options import UserOptions  # imports diffusers (samplers): only when a request is made

        return UserOptions(
            prompt=self.prompt,
            negative=self.negative,
            size=self.size,
            steps=self.steps,
            guidance=self.guidance,
            seed=self.seed,
            count=self.count if self.count is not None else 1,
            strength=self.strength,
            sampler=self.sampler,
            image=image,
            mask=mask,
            loras=self.loras,
        )


def known_flags() -> str:
    """The flags we understand, for error messages and help."""
    return ", ".join(f"`--{name}`" for name in _FLAGS)


def parse_flags(text: str) -> PromptFlags:
    """Split `text` into the prompt and its flags, or raise FlagError naming the offending flag."""
    tokens = _TOKEN.findall(text)
    prompt: list[str] = []
    values: dict[str, object] = {}
    negatives: list[str] = []
    i = 0
    while i < len(tokens):
        name = _flag_name(tokens[i])
        if name is None:
            prompt.append(tokens[i])
            i += 1
            continue
        end = i + 1
        while end < len(tokens) and _flag_name(tokens[end]) is None:
            end += 1
        words = [_unquote(w) for w in tokens[i + 1 : end]]
        i = end
        key = name.casefold()
        if key not in _FLAGS:
            raise FlagError(f"Unknown flag `--{_shown(name)}`. Known flags: {known_flags()}.")
        target, kind = _FLAGS[key]
        words = [w for w in words if w]
        if not words:
            raise FlagError(f"`--{key}` needs a value, for example `--{key} {_EXAMPLES[target]}`.")
        if kind == "text":
            value: object = " ".join(words)
        else:
            value = _convert(key, kind, words[0])
            prompt.extend(words[1:])  # `--seed 3 a cat`: "a cat" is still prompt
        if target == "negative":
            negatives.append(str(value))
        else:
            values[target] = value
    return PromptFlags(
        prompt=" ".join(prompt),
        negative=", ".join(negatives),
        **values,  # type: ignore[arg-type]
    )


_EXAMPLES = {
    "strength": "0.5",
    "seed": "42",
    "negative": "text, watermark",
    "steps": "30",
    "guidance": "7",
    "size": "3:2",
    "model": "NAME",
    "sampler": '"Euler a"',
    "count": "2",
}


def _flag_name(token: str) -> str | None:
    match = _FLAG.match(token)
    return match[1] if match else None


def _unquote(word: str) -> str:
    if len(word) >= 2 and (word[0], word[-1]) in (('"', '"'), ("“", "”")):
        return word[1:-1].strip()
    return word


def _shown(value: str) -> str:
    value = value.replace("`", "'")
    return value if len(value) <= _SHOWN_VALUE else value[: _SHOWN_VALUE - 1] + "…"


def _convert(flag: str, kind: str, word: str) -> object:
    if kind == "word":
        return word
    if kind == "int":
        try:
            return int(word)
        except ValueError:
            raise FlagError(f"`--{flag}` needs a whole number, not `{_shown(word)}`.") from None
    try:
        number = float(word.replace(",", ".") if word.count(",") == 1 and "." not in word else word)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise FlagError(f"`--{flag}` needs a number such as `{_EXAMPLES[_FLAGS[flag][0]]}`, not `{_shown(word)}`.")
    return number
