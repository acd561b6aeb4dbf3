"""The policy and settings on their own: parsing admin input, access rules, negative prompt, NSFW verdicts."""

from __future__ import annotations

import pytest

from bot.config import Config
from bot.moderation.nsfw import Verdict, previews_allowed, verdict
from bot.moderation.policy import NotAllowed, build_policy
from bot.moderation.settings import InvalidSetting, banned_entries, parse_value, with_added, with_removed
from jobs.limits import Limits
from tests.support.requests import txt2img

CONFIG = Config(limits=Limits(max_steps=50, max_pixels=1024 * 1024, cooldown_seconds=5))


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("max_steps", "20", 20),
        ("max_pixels", "512x512", 512 * 512),
        ("max_pixels", "262,144", 262144),
        ("daily_images_per_user", "0", 0),
        ("cooldown_seconds", "2m", 120.0),
        ("cooldown_seconds", "30", 30.0),
        ("nsfw", "Age restricted", "age-restricted"),
        ("default_model", "sd15", "sd15"),
        ("dms", "off", False),
        ("negative_prompt", "  blurry,   text ", "blurry, text"),
    ],
)
def test_values_are_read(key: str, text: str, value) -> None:
    assert parse_value(key, text, CONFIG) == value


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("max_steps", "80", "`max_steps` must be from 1 to 50, not 80"),  # servers tighten, never loosen
        ("max_steps", "lots", "must be a whole number"),
        ("max_pixels", "4096x4096", "to 1,048,576 pixels"),
        ("cooldown_seconds", "1", "must be from 5 s"),
        ("nsfw", "maybe", "block, spoiler, age-restricted"),
        ("default_model", "dalle", "sd-turbo, sd15"),
        ("dms", "perhaps", "on or off"),
        ("channels", "123", "add and remove"),
    ],
)
def test_bad_values_are_refused_with_the_rule(key: str, text: str, message: str) -> None:
    with pytest.raises(InvalidSetting, match=message.replace("(", r"\(")):
        parse_value(key, text, CONFIG)


def test_list_edits() -> None:
    assert banned_entries(" gore , blood  bath,") == ["gore", "blood bath"]
    with pytest.raises(InvalidSetting, match="'--' has none"):
        banned_entries("gore, --")
    assert with_added("channels", [1], [1, 2]) == [1, 2]
    assert with_added("share_roles", {"5": 2.0}, [6], {"weight": 3.0}) == {"5": 2.0, "6": 3.0}
    assert with_removed("banned_words", ["Gore", "x"], ["gore", "y"]) == (["x"], ["y"])
    assert with_removed("share_roles", {"5": 2.0}, [5]) == ({}, [])


def test_access_rules_name_the_setting() -> None:
    policy = build_policy(
        1, {"channels": [10], "roles": [20], "blocked_users": [7], "share_roles": {"30": 2.5}}, {}, CONFIG
    )
    policy.check_access(5, frozenset({10}), frozenset({20}))
    with pytest.raises(NotAllowed, match="blocked_users"):
        policy.check_access(7, frozenset({10}), frozenset({20}))
    with pytest.raises(NotAllowed, match=r"only be made in <#10>.*`channels`"):
        policy.check_access(5, frozenset({11}), frozenset({20}))
    policy.check_access(5, frozenset({12, 10}), frozenset({20}))  # a thread in #10, or a channel in category 10
    with pytest.raises(NotAllowed, match=r"<@&20>.*`roles`"):
        policy.check_access(5, frozenset({10}), frozenset({30}))
    assert policy.weight(frozenset({30, 20})) == 2.5 and policy.weight(frozenset({20})) == 1.0

    dms = build_policy(None, {}, {"dms": False}, CONFIG)
    with pytest.raises(NotAllowed, match="`dms`: off"):
        dms.check_access(5, frozenset(), frozenset())
    build_policy(None, {}, {}, CONFIG).check_access(5, frozenset(), frozenset())


def test_negative_prompt_is_appended_once_and_limits_follow_settings() -> None:
    policy = build_policy(1, {"negative_prompt": "gore", "max_steps": 10, "default_model": "gone"}, {}, CONFIG)
    once = policy.apply_negative(txt2img(negative_prompt="blurry"))
    assert once.negative_prompt == "blurry, gore"
    assert policy.apply_negative(once).negative_prompt == "blurry, gore"  # a reroll does not add it again
    assert policy.apply_negative(txt2img()).negative_prompt == "gore"
    # Where the model would ignore it (guidance ≤ 1), the server's negative prompt is left out, not refused.
    assert policy.apply_negative(txt2img(guidance=0.0), applies=False).negative_prompt == ""
    assert policy.limits.max_steps == 10 and policy.limits.max_count == CONFIG.limits.max_count
    assert policy.default_model == CONFIG.generation.default_model  # a model since removed falls back


def test_nsfw_verdicts() -> None:
    for policy in ("block", "spoiler", "age-restricted"):
        assert verdict(policy, False, None) is Verdict.SHOW and verdict(policy, False, False) is Verdict.SHOW
    assert verdict("block", True, True) is Verdict.BLOCK
    assert verdict("spoiler", False, True) is Verdict.SPOILER
    assert verdict("age-restricted", False, True) is Verdict.BLOCK
    assert verdict("age-restricted", True, True) is Verdict.SHOW
    assert previews_allowed("block", False, checked=False)  # nothing is detected anyway
    assert not previews_allowed("spoiler", False, checked=True)
    assert previews_allowed("age-restricted", True, checked=True)
