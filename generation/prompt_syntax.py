"""Automatic1111's prompt syntax, parsed into weighted fragments: `(word:1.3)`, `(word)`, `[word]`, escapes, BREAK.

Pure Python (no torch): the bot can read a prompt cheaply; generation.families.prompt_embeds turns the fragments
into embeddings. Follows A1111's `parse_prompt_attention`, except where A1111 misbehaves: an unclosed bracket
stays literal text (A1111 weights the rest of the prompt), a lone backslash stays (A1111 drops it), a weight
that is not a number stays text (A1111 raises), and BREAK inside brackets still breaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from generation.loras import strip_lora_tags

ROUND_FACTOR = 1.1  # `(word)`
SQUARE_FACTOR = 1 / 1.1  # `[word]`

_TOKEN = re.compile(
    r"""
      \\[()\[\]\\]              # an escaped bracket or backslash: that character, as text
    | [(\[]                     # opens an emphasis
    | :\s*([+-]?[.\d]+)\s*\)    # closes a round bracket with an explicit weight
    | [)\]]                     # closes one
    | [^\\()\[\]:]+             # text
    | [\\:]                     # a lone backslash or colon: text
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


@dataclass(frozen=True)
class Fragment:
    """A run of prompt text and the weight A1111 gives it."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt as the text encoders see it: BREAK-separated segments of weighted fragments, no syntax left."""

    segments: tuple[tuple[Fragment, ...], ...]

    @property
    def text(self) -> str:
        """The words without any syntax (segments joined by a space)."""
        return " ".join("".join(f.text for f in segment) for segment in self.segments)

    @property
    def weighted(self) -> bool:
        """Whether any fragment has a weight other than 1."""
        return any(f.weight != 1.0 for segment in self.segments for f in segment)

    @property
    def has_break(self) -> bool:
        """Whether BREAK splits the prompt into more than one segment."""
        return len(self.segments) > 1

    @property
    def empty(self) -> bool:
        """Whether nothing but whitespace is left (an empty negative prompt, say)."""
        return not self.text.strip()


class _Piece:
    """One parsed item while brackets are still being matched."""

    __slots__ = ("is_break", "text", "weight")

    def __init__(self, text: str, is_break: bool = False) -> None:
        self.text = text
        self.weight = 1.0
        self.is_break = is_break


def parse_prompt(prompt: str) -> ParsedPrompt:
    """A1111 prompt text (with `<lora:…>` tags removed) as weighted fragments; never raises."""
    pieces: list[_Piece] = []
    # Indices in `pieces` of open brackets; each stays as a literal "(" or "[" piece until closed.
    rounds: list[int] = []
    squares: list[int] = []

    def close(start: int, factor: float) -> None:
        pieces[start].text = ""
        for piece in pieces[start + 1 :]:
            piece.weight *= factor

    def add_text(text: str) -> None:
        for index, part in enumerate(_BREAK.split(text)):
            if index:
                pieces.append(_Piece("", is_break=True))
            pieces.append(_Piece(part))

    for match in _TOKEN.finditer(strip_lora_tags(prompt)):
        token = match[0]
        if len(token) == 2 and token[0] == "\\":
            pieces.append(_Piece(token[1]))
        elif token in ("(", "["):
            (rounds if token == "(" else squares).append(len(pieces))
            pieces.append(_Piece(token))
        elif match[1] is not None and rounds:
            weight = _number(match[1])
            if weight is None:  # `(word:1.2.3)`: the colon and digits are text, the bracket closes as `(word)`
                add_text(token[:-1])
                weight = ROUND_FACTOR
            close(rounds.pop(), weight)
        elif token == ")" and rounds:
            close(rounds.pop(), ROUND_FACTOR)
        elif token == "]" and squares:
            close(squares.pop(), SQUARE_FACTOR)
        else:
            add_text(token)
    return ParsedPrompt(_segments(pieces))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _segments(pieces: list[_Piece]) -> tuple[tuple[Fragment, ...], ...]:
    segments: list[list[Fragment]] = [[]]
    for piece in pieces:
        if piece.is_break:
            segments.append([])
            continue
        if not piece.text:
            continue
        # Rounded so that `([word])` is exactly 1 (1.1 / 1.1 is not, in floating point) and takes the plain path.
        weight = round(piece.weight, 6)
        segment = segments[-1]
        if segment and segment[-1].weight == weight:
            # Like A1111, neighbours of equal weight are one fragment: tokenized together, as plain text would be.
            segment[-1] = Fragment(segment[-1].text + piece.text, weight)
        else:
            segment.append(Fragment(piece.text, weight))
    # A1111 starts a chunk at each BREAK but emits the last one only if it holds tokens.
    if len(segments) > 1 and not "".join(f.text for f in segments[-1]).strip():
        segments.pop()
    return tuple(tuple(segment) for segment in segments)
