"""Midjourney-style flags after a prompt: what is parsed out, and how mistakes are named."""

from __future__ import annotations

import pytest

from bot.flags import FlagError, PromptFlags, parse_flags


def test_plain_prompt_has_no_flags() -> None:
    assert parse_flags("  a red   cube ") == PromptFlags(prompt="a red cube")


def test_every_flag_is_parsed_and_removed_from_the_prompt() -> None:
    flags = parse_flags(
        'make it winter --strength 0.4 --seed 9 --no text --steps 30 --cfg 6 --ar 3:2 --model tiny --sampler "Euler a"'
        " --count 2"
    )
    assert flags == PromptFlags(
        prompt="make it winter",
        negative="text",
        strength=0.4,
        seed=9,
        steps=30,
        guidance=6.0,
        size="3:2",
        model="tiny",
        sampler="Euler a",
        count=2,
    )
    assert parse_flags("x --guidance 7.5 --size 768x512").guidance == 7.5
    assert parse_flags("x --size 768x512").size == "768x512"


def test_negative_takes_words_until_the_next_flag_and_repeats_join() -> None:
    flags = parse_flags("a castle --no snow, blurry people --seed 3 --no text")
    assert flags.prompt == "a castle" and flags.negative == "snow, blurry people, text" and flags.seed == 3


def test_number_flags_take_one_word_and_leave_the_rest_in_the_prompt() -> None:
    flags = parse_flags("--seed 3 a cat on a mat")
    assert flags.seed == 3 and flags.prompt == "a cat on a mat"


def test_unquoted_multiword_sampler_and_em_dash_flags() -> None:
    flags = parse_flags("a cat —sampler DPM++ 2M Karras —STRENGTH 0,5")
    assert flags.sampler == "DPM++ 2M Karras" and flags.strength == 0.5 and flags.prompt == "a cat"


def test_quotes_and_dashes_inside_the_prompt_are_kept() -> None:
    flags = parse_flags('a "quoted" sign -- and a t-shirt --no x')
    assert flags.prompt == 'a "quoted" sign -- and a t-shirt' and flags.negative == "x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x --foo 1", "Unknown flag `--foo`"),
        ("x --stylize 100", "Unknown flag `--stylize`. Known flags: `--strength`"),
        ("x --seed abc", "`--seed` needs a whole number, not `abc`"),
        ("x --steps 2.5", "`--steps` needs a whole number, not `2.5`"),
        ("x --strength lots", "`--strength` needs a number such as `0.5`, not `lots`"),
        ("x --cfg nan", "`--cfg` needs a number such as `7`, not `nan`"),
        ("x --no", "`--no` needs a value"),
        ("x --seed --steps 3", "`--seed` needs a value, for example `--seed 42`"),
    ],
)
def test_mistakes_name_the_flag_and_the_value(text: str, message: str) -> None:
    with pytest.raises(FlagError) as caught:
        parse_flags(text)
    assert message in caught.value.user_message
