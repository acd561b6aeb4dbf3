"""A1111 prompt syntax parsed into weighted fragments (pure Python, no model)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generation.prompt_syntax import ROUND_FACTOR, SQUARE_FACTOR, Fragment, ParsedPrompt, parse_prompt

# Bits of syntax, A1111's and ours, mixed at random.
SYNTAX_SOUP = st.lists(st.sampled_from([*"ab :.1-+()[]\\<>", "BREAK", "lora:", "\n", "é"]), max_size=40).map("".join)


def fragments(text: str) -> list[tuple[str, float]]:
    """The single segment of a parsed prompt, as (text, weight) pairs."""
    (segment,) = parse_prompt(text).segments
    return [(f.text, f.weight) for f in segment]


def test_plain_text_is_one_fragment_of_weight_one() -> None:
    parsed = parse_prompt("a red cube, 4k: photo")
    assert parsed == ParsedPrompt(((Fragment("a red cube, 4k: photo"),),))
    assert not parsed.weighted and not parsed.has_break and parsed.text == "a red cube, 4k: photo"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a (red:1.3) cube", [("a ", 1.0), ("red", 1.3), (" cube", 1.0)]),
        ("(red : 0.5 )", [("red ", 0.5)]),
        ("(red:-1)", [("red", -1.0)]),
        ("(red)", [("red", round(ROUND_FACTOR, 6))]),
        ("[red]", [("red", round(SQUARE_FACTOR, 6))]),
        ("((red))", [("red", 1.21)]),
        ("[[red]]", [("red", round(SQUARE_FACTOR**2, 6))]),
        ("(a [b] c:1.5)", [("a ", 1.5), ("b", round(1.5 * SQUARE_FACTOR, 6)), (" c", 1.5)]),
        ("((a:1.2) b)", [("a", 1.32), (" b", 1.1)]),
    ],
)
def test_weights(text: str, expected: list[tuple[str, float]]) -> None:
    assert fragments(text) == expected


def test_neutral_weights_are_exactly_one() -> None:
    # 1.1 / 1.1 is 0.9999999999999999 in floating point: it must still take the plain path.
    assert not parse_prompt("([red])").weighted
    assert not parse_prompt("a (red:1.0) cube").weighted
    assert parse_prompt("a (red:1.0) cube").text == "a red cube"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"a \(red\) cube", "a (red) cube"),
        (r"\[red\]", "[red]"),
        (r"a \\ b", "a \\ b"),
        (r"a \ b", "a \\ b"),  # a lone backslash is text (A1111 drops it)
        (r"\(red:1.3\)", "(red:1.3)"),
    ],
)
def test_escapes_are_literal_brackets(text: str, expected: str) -> None:
    assert fragments(text) == [(expected, 1.0)]


def test_escaped_brackets_inside_a_weight() -> None:
    assert fragments(r"(a \(b\):1.2)") == [("a (b)", 1.2)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a (red cube", [("a (red cube", 1.0)]),
        ("a red) cube", [("a red) cube", 1.0)]),
        ("a [red cube", [("a [red cube", 1.0)]),
        ("red] cube", [("red] cube", 1.0)]),
        ("((a)", [("(", 1.0), ("a", 1.1)]),
        ("a:1.3) b", [("a:1.3) b", 1.0)]),
        ("smile :(", [("smile :(", 1.0)]),
        ("[x:1.3](", [("x:1.3", round(SQUARE_FACTOR, 6)), ("(", 1.0)]),
    ],
)
def test_unbalanced_brackets_are_literal_text(text: str, expected: list[tuple[str, float]]) -> None:
    assert fragments(text) == expected


def test_an_unclosed_bracket_weights_nothing() -> None:
    assert fragments("a ((b) c") == [("a (", 1.0), ("b", 1.1), (" c", 1.0)]


def test_a_weight_that_is_no_number_is_text() -> None:
    assert fragments("(a:1.2.3)") == [("a:1.2.3", 1.1)]


def test_square_brackets_take_no_explicit_weight() -> None:
    assert fragments("[a:1.3]") == [("a:1.3", round(SQUARE_FACTOR, 6))]


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a red cube BREAK blue sky", ["a red cube", "blue sky"]),
        ("a BREAK b BREAK c", ["a", "b", "c"]),
        ("BREAK a", ["", "a"]),  # A1111: an empty first chunk
        ("a BREAK BREAK b", ["a", "", "b"]),
        ("a BREAK", ["a"]),  # the last chunk only if it holds something
        ("(a BREAK b)", ["a", "b"]),
        ("BREAKFAST", ["BREAKFAST"]),
        ("a break b", ["a break b"]),
    ],
)
def test_break_starts_a_new_segment(text: str, segments: list[str]) -> None:
    parsed = parse_prompt(text)
    assert ["".join(f.text for f in s) for s in parsed.segments] == segments
    assert parsed.has_break == (len(segments) > 1)


def test_break_keeps_weights() -> None:
    parsed = parse_prompt("(a BREAK b:1.3)")
    assert [[(f.text, f.weight) for f in s] for s in parsed.segments] == [[("a", 1.3)], [("b", 1.3)]]


def test_lora_tags_are_removed() -> None:
    assert parse_prompt("a cat <lora:film grain:0.8>, (sunset:1.2) <LORA:other>").segments == (
        (Fragment("a cat , ", 1.0), Fragment("sunset", 1.2)),
    )
    assert parse_prompt("<lora:style:1>").empty


def test_empty_prompts() -> None:
    assert parse_prompt("").segments == ((),) and parse_prompt("").empty
    assert parse_prompt("()").empty and parse_prompt("[ ]").empty


@given(SYNTAX_SOUP)
def test_parsing_never_raises_on_syntax_soup(text: str) -> None:
    parsed = parse_prompt(text)
    assert parsed.segments
    assert all(f.text for segment in parsed.segments for f in segment)


@given(st.text(max_size=200))
def test_parsing_never_raises_on_any_text(text: str) -> None:
    parse_prompt(text)


@given(st.text(alphabet=st.characters(blacklist_characters="()[]\\<"), max_size=80))
def test_text_without_syntax_is_left_as_it_is(text: str) -> None:
    parsed = parse_prompt(text)
    if "BREAK" not in text:
        assert parsed.text == text and not parsed.weighted and not parsed.has_break
