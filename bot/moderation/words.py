"""Banned-word matching that sees through case, accents, invisible characters, look-alikes and spacing.

Pure text work, no Discord. Text and banned entries are folded to one canonical form and compared
word by word, so a banned word never fires inside a longer word (the Scunthorpe problem): "ass" does
not match "class". An entry may say otherwise with a `*`: `kill*` also matches "killer", `*porn`
matches "xporn", `*gore*` matches anywhere. Folding:

1. NFKD, then combining marks and format characters (Unicode category Cf: zero-width space and
   joiners, soft hyphen, word joiner, bidi marks) are dropped: "b\u200bád" → "bad"; full-width and
   mathematical letters become plain ones ("ｂａｄ", "𝐛𝐚𝐝" → "bad").
2. Cyrillic and Greek letters that look like Latin ones become those letters ("bаd" with a Cyrillic а).
3. casefold; then `l` and `i` are merged (as `1`, `|` and `!` stand for either), so "ki11" is "kill".
4. Leetspeak digits and symbols (0→o, 1→i, 3→e, 4→a, 5→s, 7→t, 8→b, @→a, $→s, ...) are read both as
   letters and as separators, so "b4d" matches "bad" and so does "bad!".

Spacing tricks: each text is looked at as (a) words split at anything that is not a letter,
(b) whitespace-separated chunks with the punctuation inside them removed ("ba.d", "b-a-d" → "bad"),
and (c) runs of single letters joined ("b a d", "b . a . d" → "bad"; the entry may be anywhere in
such a run). Not caught, by design or cost: repeated letters ("baaad"), partial spacing ("ba d"),
reversed or phonetic spellings, words inside longer words unless the entry has a `*`, and merging
`l`/`i` can make two such words equal ("pill", "pili").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# Upper-case look-alikes first: casefold would turn Greek Η (looks like H) into η (looks like n).
_UPPER_LOOKALIKES = str.maketrans(
    {
        **dict(zip("АВЕЅІЈКМНОРСТХУԜ", "ABESIJKMHOPCTXYW", strict=True)),  # Cyrillic
        **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX", strict=True)),  # Greek
    }
)
_LOWER_LOOKALIKES = str.maketrans(
    {
        **dict(zip("аеорсухіјѕԁӏԛԝһкмтвпг", "aeopcyxijsdiqwhkmtbnr", strict=True)),  # Cyrillic (ӏ is an l)
        **dict(zip("αβεικνορτυχωγη", "abeiknoptuxwyn", strict=True)),  # Greek
        "ı": "i",  # dotless i
        **dict(zip("øđðħłŧƀƶ", "oddhitbz", strict=True)),  # stroked Latin letters NFKD keeps as they are
        "ſ": "s",  # long s
        "l": "i",  # l, I, 1 and | look alike: compare them as one letter
    }
)
_LEET = {"0": "o", "1": "i", "2": "z", "3": "e", "4": "a", "5": "s", "6": "b", "7": "t", "8": "b", "9": "g"}
_LEET |= {"@": "a", "$": "s", "!": "i", "|": "i", "+": "t", "€": "e", "£": "e", "¢": "c"}
_AS_LETTERS = str.maketrans(_LEET)
_AS_SPACES = str.maketrans({c: " " for c in _LEET})
_LETTERS = re.compile(r"[^\W\d_]+")


def fold(text: str) -> str:
    """The canonical form both texts and banned entries are compared in (leetspeak untouched)."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in decomposed if unicodedata.category(c) not in ("Mn", "Me", "Cf"))
    return kept.translate(_UPPER_LOOKALIKES).casefold().translate(_LOWER_LOOKALIKES)


def _views(text: str) -> Iterator[tuple[list[str], list[str]]]:
    """(words, single-letter runs) for each way of reading the text."""
    folded = fold(text)
    for variant in (folded.translate(_AS_LETTERS), folded.translate(_AS_SPACES)):
        words = _LETTERS.findall(variant)
        chunks = ["".join(_LETTERS.findall(chunk)) for chunk in variant.split()]
        yield words, _spelled_runs(words)
        yield [c for c in chunks if c], []


def _spelled_runs(words: list[str]) -> list[str]:
    runs, current = [], []
    for word in [*words, ""]:
        if len(word) == 1:
            current.append(word)
            continue
        if len(current) >= 2:
            runs.append("".join(current))
        current = []
    return runs


@dataclass(frozen=True)
class _Entry:
    shown: str  # as the moderator typed it
    words: tuple[str, ...]
    prefix: bool  # `word*`
    suffix: bool  # `*word`

    def matches(self, words: list[str], runs: list[str]) -> bool:
        joined = "".join(self.words)
        if any(joined in run for run in runs):
            return True
        if len(self.words) == 1 or self.prefix or self.suffix:
            return any(self._matches_word(word, joined) for word in words)
        n = len(self.words)
        windows = (tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        return any(window == self.words for window in windows) or joined in words

    def _matches_word(self, word: str, joined: str) -> bool:
        if self.prefix and self.suffix:
            return joined in word
        if self.prefix:
            return word.startswith(joined)
        if self.suffix:
            return word.endswith(joined)
        return word == joined


def _entry(text: str) -> _Entry | None:
    stripped = text.strip()
    words = tuple(_LETTERS.findall(fold(stripped.strip("*")).translate(_AS_LETTERS)))
    if not words:
        return None
    return _Entry(stripped, words, prefix=stripped.endswith("*"), suffix=stripped.startswith("*"))


class BannedWords:
    """A server's banned words and phrases, ready to check prompts against."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._entries = [e for e in (_entry(text) for text in entries) if e is not None]

    def __bool__(self) -> bool:
        return bool(self._entries)

    def find(self, text: str) -> str | None:
        """The first banned entry (as configured) that `text` contains, or None."""
        if not self._entries:
            return None
        views = list(_views(text))
        for entry in self._entries:
            if any(entry.matches(words, runs) for words, runs in views):
                return entry.shown
        return None


def usable_entry(text: str) -> bool:
    """Whether an entry has any letters to match (not just '***' or '--')."""
    return _entry(text) is not None
