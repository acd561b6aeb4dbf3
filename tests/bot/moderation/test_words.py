"""Banned words: which evasions are caught, and which innocent words are left alone."""

from __future__ import annotations

import pytest

from bot.moderation.words import BannedWords, fold, usable_entry

BANNED = BannedWords(["bad", "kill*", "blood bath", "cunt", "*gore*"])

# (prompt, what it tries, the entry it should hit or None)
EVASIONS = [
    ("a BAD dog", "upper case", "bad"),
    ("a bÁd dog", "accents", "bad"),
    ("a b\u0301ad dog", "combining accent", "bad"),
    ("a b\u200bad dog", "zero-width space", "bad"),
    ("a b\u00adad\u2060 dog", "soft hyphen, word joiner", "bad"),
    ("a bаd dog", "Cyrillic а", "bad"),
    ("a ΒΑD dog", "Greek capitals", "bad"),
    ("a ｂａｄ dog", "full-width letters", "bad"),
    ("a 𝐛𝐚𝐝 dog", "mathematical bold", "bad"),
    ("a b4d dog", "leet digit", "bad"),
    ("a b@d dog", "leet symbol", "bad"),
    ("a b a d dog", "letters spaced out", "bad"),
    ("a b.a.d dog", "dots between letters", "bad"),
    ("a b-a-d dog", "dashes between letters", "bad"),
    ("a b_a_d dog", "underscores between letters", "bad"),
    ("a b🙂a🙂d dog", "emoji between letters", "bad"),
    ("a ba.d dog", "a dot inside the word", "bad"),
    ("so bad!", "punctuation after", "bad"),
    ("(bad)", "brackets", "bad"),
    ("a k1ll3r robot", "leet, with a prefix entry", "kill*"),
    ("kiII it", "capital I for l", "kill*"),
    ("a bloodbath", "phrase written as one word", "blood bath"),
    ("a blood-bath", "phrase with a dash", "blood bath"),
    ("a b l o o d b a t h", "phrase spelled out", "blood bath"),
    ("so much GØRE", "substring entry, slashed O", "*gore*"),
    ("a baaad dog", "repeated letters: not caught", None),
    ("a ba d dog", "partial spacing: not caught", None),
    ("a badness", "longer word without `*`: not caught", None),
    ("d a b", "reversed: not caught", None),
]

INNOCENT = [
    "Scunthorpe at dusk",  # contains a banned word inside a longer word
    "a good dog with a skill",
    "the pen is red",
    "bath time with blood oranges",
    "badge on a jacket",
]


@pytest.mark.parametrize(("prompt", "trick", "expected"), EVASIONS, ids=[e[1] for e in EVASIONS])
def test_evasions(prompt: str, trick: str, expected: str | None) -> None:
    assert BANNED.find(prompt) == expected


@pytest.mark.parametrize("prompt", INNOCENT)
def test_innocent_prompts_pass(prompt: str) -> None:
    assert BANNED.find(prompt) is None


def test_fold_and_entries() -> None:
    assert fold("ＢÀ\u200bD") == "bad"
    assert fold("Η") == "h" and fold("η") == "n"  # the capital looks like H, the small letter like n
    assert not usable_entry("***") and not usable_entry("--") and usable_entry("b4d")
    assert not BannedWords([]) and BannedWords([]).find("anything") is None
    assert BannedWords(["p0rn"]).find("some porn") == "p0rn"  # entries are folded the same way
