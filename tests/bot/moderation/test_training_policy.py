"""Server settings for LoRA training (/train): parsing and showing them, the checks a training passes, the daily
quota against a real store, who may delete a LoRA, and /imagine-admin changing them through the fake Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from bot.config import Config, ConfigError, load_config
from bot.moderation.policy import NotAllowed, build_policy, check_daily_trainings, load_policy, may_delete_lora
from bot.moderation.settings import SETTINGS, InvalidSetting, defaults, parse_value, show_value
from jobs.limits import LimitExceeded, Limits
from storage import Store
from storage.records import LoraRecord
from tests.bot.moderation.test_admin import admin, text_of
from tests.storage.factories import FakeClock

CONFIG = Config(limits=Limits(max_train_steps=800, max_train_photos=12, daily_trainings_per_user=3))
NO_QUOTA = Config(limits=Limits(daily_trainings_per_user=0))
EVERYWHERE, NO_ROLES = frozenset({10}), frozenset[int]()

# --- settings -------------------------------------------------------------------------------------


def test_training_settings_and_their_defaults() -> None:
    keys = ("training", "train_roles", "max_train_photos", "max_train_steps", "daily_trainings_per_user")
    assert {*keys, "lora_sharing"} <= set(SETTINGS)
    assert SETTINGS["train_roles"].is_list and not SETTINGS["training"].is_list
    assert SETTINGS["daily_trainings_per_user"].label == "Trainings per member per day (UTC)"
    base = defaults(CONFIG)
    assert (base["training"], base["train_roles"], base["lora_sharing"]) == (True, [], True)
    assert (base["max_train_photos"], base["max_train_steps"], base["daily_trainings_per_user"]) == (12, 800, 3)
    assert Limits().max_train_steps == 1000 and Limits().max_train_photos == 20
    assert Limits().daily_trainings_per_user == 2


@pytest.mark.parametrize(
    ("key", "text", "value", "config"),
    [
        ("training", "off", False, CONFIG),
        ("lora_sharing", "no", False, CONFIG),
        ("max_train_photos", "3", 3, CONFIG),
        ("max_train_photos", "12", 12, CONFIG),
        ("max_train_steps", "1", 1, CONFIG),
        ("max_train_steps", "800", 800, CONFIG),
        ("daily_trainings_per_user", "1", 1, CONFIG),
        ("daily_trainings_per_user", "3", 3, CONFIG),
        ("daily_trainings_per_user", "50", 50, NO_QUOTA),  # the operator set none: any quota is tighter
    ],
)
def test_training_values_are_read(key: str, text: str, value, config: Config) -> None:
    assert parse_value(key, text, config) == value


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("max_train_photos", "2", "`max_train_photos` must be from 3 to 12, not 2"),  # a training needs 3
        ("max_train_photos", "13", "`max_train_photos` must be from 3 to 12, not 13"),  # servers only tighten
        ("max_train_steps", "801", "`max_train_steps` must be from 1 to 800, not 801"),
        ("max_train_steps", "0", "`max_train_steps` must be from 1 to 800, not 0"),
        ("daily_trainings_per_user", "4", "`daily_trainings_per_user` must be from 1 to 3, not 4"),
        ("daily_trainings_per_user", "0", "`daily_trainings_per_user` must be from 1 to 3, not 0"),  # 0: none
        ("training", "sometimes", "`training` is on or off"),
        ("train_roles", "123", "add and remove"),
    ],
)
def test_bad_training_values_are_refused_with_the_rule(key: str, text: str, message: str) -> None:
    with pytest.raises(InvalidSetting, match=message):
        parse_value(key, text, CONFIG)


def test_training_values_are_shown() -> None:
    assert show_value("daily_trainings_per_user", 2) == "2 trainings"
    assert show_value("daily_trainings_per_user", 0) == "no quota"
    assert show_value("daily_images_per_user", 5) == "5 images"
    assert show_value("daily_trainings_per_user", 1) == "1 training"
    assert show_value("train_roles", []) == "whoever may make images"
    assert show_value("train_roles", [5, 6]) == "<@&5>, <@&6>"
    assert show_value("roles", []) == "everyone"
    assert show_value("training", False) == "off" and show_value("lora_sharing", True) == "on"
    assert show_value("max_train_steps", 800) == "800"


# --- the checks a training passes ----------------------------------------------------------------------


def test_a_training_passes_within_the_limits() -> None:
    policy = build_policy(1, {}, {}, CONFIG)
    policy.check_training(5, EVERYWHERE, NO_ROLES, photos=12, steps=800)
    assert (policy.training, policy.train_roles, policy.lora_sharing) == (True, frozenset(), True)


def test_training_follows_the_image_access_rules() -> None:
    policy = build_policy(1, {"channels": [10], "roles": [20], "blocked_users": [7]}, {}, CONFIG)
    policy.check_training(5, EVERYWHERE, frozenset({20}), photos=3, steps=100)
    with pytest.raises(NotAllowed, match="blocked_users"):
        policy.check_training(7, EVERYWHERE, frozenset({20}), photos=3, steps=100)
    with pytest.raises(NotAllowed, match=r"<#10>.*`channels`"):
        policy.check_training(5, frozenset({11}), frozenset({20}), photos=3, steps=100)
    with pytest.raises(NotAllowed, match=r"<@&20>.*`roles`"):
        policy.check_training(5, EVERYWHERE, NO_ROLES, photos=3, steps=100)


def test_training_turned_off_is_refused_naming_the_setting() -> None:
    policy = build_policy(1, {"training": False}, {}, CONFIG)
    with pytest.raises(NotAllowed) as refused:
        policy.check_training(5, EVERYWHERE, NO_ROLES, photos=3, steps=100)
    assert refused.value.user_message == "Training LoRAs is turned off on this server (setting `training`: off)."


def test_train_roles_narrow_who_may_train() -> None:
    policy = build_policy(1, {"train_roles": [30, 20]}, {}, CONFIG)
    policy.check_training(5, EVERYWHERE, frozenset({30}), photos=3, steps=100)
    with pytest.raises(NotAllowed) as refused:
        policy.check_training(5, EVERYWHERE, frozenset({40}), photos=3, steps=100)
    assert refused.value.user_message == (
        "Training LoRAs on this server needs one of these roles: <@&20>, <@&30> (`train_roles`)."
    )
    # Both lists apply: a member needs an image role and a training role.
    both = build_policy(1, {"roles": [20], "train_roles": [30]}, {}, CONFIG)
    both.check_training(5, EVERYWHERE, frozenset({20, 30}), photos=3, steps=100)
    with pytest.raises(NotAllowed, match="`roles`"):
        both.check_training(5, EVERYWHERE, frozenset({30}), photos=3, steps=100)


def test_photos_and_steps_over_the_limits_name_count_limit_and_setting() -> None:
    policy = build_policy(1, {"max_train_photos": 5, "max_train_steps": 300}, {}, CONFIG)
    policy.check_training(5, EVERYWHERE, NO_ROLES, photos=5, steps=300)
    with pytest.raises(LimitExceeded) as photos:
        policy.check_training(5, EVERYWHERE, NO_ROLES, photos=6, steps=300)
    assert photos.value.user_message == "6 photos is over this server's limit of 5 per training (`max_train_photos`)."
    with pytest.raises(LimitExceeded) as steps:
        policy.check_training(5, EVERYWHERE, NO_ROLES, photos=5, steps=301)
    assert steps.value.user_message == "301 training steps is over this server's limit of 300 (`max_train_steps`)."
    assert not isinstance(steps.value, NotAllowed)  # a limit, not a permission


def test_direct_messages_follow_dms_and_the_operators_limits_only() -> None:
    dms = build_policy(None, {}, {}, CONFIG)
    dms.check_training(5, NO_ROLES, NO_ROLES, photos=12, steps=800)
    with pytest.raises(LimitExceeded, match=r"13 photos is over the bot's limit of 12 .*`max_train_photos`"):
        dms.check_training(5, NO_ROLES, NO_ROLES, photos=13, steps=800)
    with pytest.raises(LimitExceeded, match=r"limit of 800 \(`max_train_steps`\)"):
        dms.check_training(5, NO_ROLES, NO_ROLES, photos=3, steps=801)
    closed = build_policy(None, {}, {"dms": False}, CONFIG)
    with pytest.raises(NotAllowed, match="`dms`: off"):
        closed.check_training(5, NO_ROLES, NO_ROLES, photos=3, steps=100)


def test_banned_words_apply_to_the_lora_name_and_trigger_word() -> None:
    policy = build_policy(1, {"banned_words": ["gore", "blood bath"]}, {}, CONFIG)
    policy.check_lora_words("Rex the dog", "sks")
    with pytest.raises(NotAllowed) as name:
        policy.check_lora_words("Blood  Bath club", "sks")
    assert name.value.user_message == (
        "Your LoRA's name has a word this server does not allow: ||blood bath|| (`banned_words`)."
    )
    with pytest.raises(NotAllowed, match=r"LoRA's trigger word .*\|\|gore\|\| \(`banned_words`\)"):
        policy.check_lora_words("Rex", "G0RE")
    build_policy(None, {}, {}, CONFIG).check_lora_words("gore", "gore")  # direct messages have no banned words


def test_sharing_can_be_turned_off() -> None:
    build_policy(1, {}, {}, CONFIG).check_sharing()
    policy = build_policy(1, {"lora_sharing": False}, {}, CONFIG)
    with pytest.raises(NotAllowed) as refused:
        policy.check_sharing()
    assert refused.value.user_message == "Sharing LoRAs is turned off on this server (setting `lora_sharing`: off)."


def lora(owner_id: int = 7, guild_id: int | None = 1) -> LoraRecord:
    return LoraRecord(
        id=1,
        name="Rex",
        trigger_token="sks",
        base_model="tiny",
        kind="sd",
        path="loras/1.safetensors",
        sha256="0" * 64,
        size_bytes=10,
        owner_id=owner_id,
        guild_id=guild_id,
        shared=True,
        training_id=1,
        created_at=datetime(2025, 3, 1, tzinfo=UTC),
        deleted_at=None,
    )


def test_who_may_delete_a_lora() -> None:
    assert may_delete_lora(lora(), 7, None, is_moderator=False)  # the owner, anywhere
    assert may_delete_lora(lora(), 7, 2, is_moderator=False)
    assert may_delete_lora(lora(), 8, 1, is_moderator=True)  # a moderator of the server it was made in
    assert not may_delete_lora(lora(), 8, 1, is_moderator=False)
    assert not may_delete_lora(lora(), 8, 2, is_moderator=True)  # a moderator elsewhere
    assert not may_delete_lora(lora(guild_id=None), 8, None, is_moderator=True)  # made in direct messages


# --- the daily quota, on a real store ------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()  # just before a UTC midnight


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "imagine.sqlite3", tmp_path / "images", clock=clock) as opened:
        yield opened


async def start_training(store: Store, user_id: int, guild_id: int | None, name: str) -> None:
    await store.create_training(
        user_id=user_id,
        guild_id=guild_id,
        name=name,
        trigger_token="sks",
        class_word="dog",
        base_model="tiny",
        kind="sd",
        settings={"token": "sks", "steps": 100},
        total_steps=100,
        photos=[Image.new("RGB", (64, 64), (40 * i, 100, 200)) for i in range(3)],
    )


async def test_the_daily_training_quota_counts_per_member_server_and_utc_day(store: Store, clock: FakeClock) -> None:
    policy = build_policy(1, {"daily_trainings_per_user": 2}, {}, CONFIG)
    await check_daily_trainings(store, policy, 7)
    await start_training(store, 7, 1, "Rex")
    await check_daily_trainings(store, policy, 7)
    await start_training(store, 7, 1, "Rex 2")
    with pytest.raises(LimitExceeded) as refused:
        await check_daily_trainings(store, policy, 7)
    assert refused.value.user_message == (
        "You have started 2 of your 2 trainings today (UTC) on this server (`daily_trainings_per_user`)."
    )
    await check_daily_trainings(store, policy, 8)  # another member
    await check_daily_trainings(store, build_policy(2, {}, {}, CONFIG), 7)  # another server
    await check_daily_trainings(store, build_policy(1, {}, {}, NO_QUOTA), 7)  # no quota at all
    clock.advance(minutes=2)  # past midnight UTC: a new day
    await check_daily_trainings(store, policy, 7)


async def test_the_daily_training_quota_in_direct_messages(store: Store) -> None:
    dms = build_policy(None, {}, {}, Config(limits=Limits(daily_trainings_per_user=1)))
    await start_training(store, 7, 1, "On a server")
    await check_daily_trainings(store, dms, 7)  # a server's trainings do not count here
    await start_training(store, 7, None, "In DMs")
    with pytest.raises(LimitExceeded, match=r"1 of your 1 trainings today \(UTC\) in direct messages"):
        await check_daily_trainings(store, dms, 7)


# --- /imagine-admin ---------------------------------------------------------------------------------------


async def test_admins_turn_training_off_and_limit_it(start_bot) -> None:
    async with start_bot(max_train_photos=10) as running:
        fake, store, guild = running.fake, running.store, running.fake.guild.id
        shown = text_of(await admin(fake, "imagine-admin show"))
        for line in (
            "`training` Members may train LoRAs with /train: **on** · default",
            "`train_roles` Roles allowed to train LoRAs: **whoever may make images** · default",
            "`max_train_photos` Most photos per training: **10** · default",
            "`max_train_steps` Most steps per training: **1000** · default",
            "`daily_trainings_per_user` Trainings per member per day (UTC): **2 trainings** · default",
            "`lora_sharing` Members may share their LoRAs with the server: **on** · default",
        ):
            assert line in shown, line

        typing = await fake.send_autocomplete(
            "imagine-admin set", {"setting": "training", "value": ""}, focused="value", user=fake.moderator
        )
        assert [c["value"] for c in await typing.wait_for_choices()] == ["on", "off"]  # a switch offers both
        changed = await admin(fake, "imagine-admin set", {"setting": "training", "value": "off"})
        assert changed["content"] == "`training` is now **off** (was on)."
        await admin(fake, "imagine-admin set", {"setting": "lora_sharing", "value": "off"})
        bad = await admin(fake, "imagine-admin set", {"setting": "max_train_photos", "value": "2"})
        assert "`max_train_photos` must be from 3 to 10, not 2" in bad["content"]
        bad = await admin(fake, "imagine-admin set", {"setting": "daily_trainings_per_user", "value": "5"})
        assert "`daily_trainings_per_user` must be from 1 to 2, not 5" in bad["content"]
        changed = await admin(fake, "imagine-admin set", {"setting": "daily_trainings_per_user", "value": "1"})
        assert changed["content"] == "`daily_trainings_per_user` is now **1 training** (was 2 trainings)."
        assert await store.get_guild_settings(guild) == {
            "training": False,
            "lora_sharing": False,
            "daily_trainings_per_user": 1,
        }

        policy = await load_policy(store, running.config, guild)
        with pytest.raises(NotAllowed, match="`training`: off"):
            policy.check_training(fake.member.id, frozenset({fake.channel.id}), NO_ROLES, photos=3, steps=100)
        with pytest.raises(NotAllowed, match="`lora_sharing`: off"):
            policy.check_sharing()
        assert policy.limits.daily_trainings_per_user == 1

        reset = await admin(fake, "imagine-admin reset", {"setting": "training"})
        assert reset["content"] == "`training` is back to the default: **on**."
        policy = await load_policy(store, running.config, guild)
        policy.check_training(fake.member.id, frozenset({fake.channel.id}), NO_ROLES, photos=3, steps=100)


async def test_the_train_roles_group(start_bot) -> None:
    async with start_bot() as running:
        fake, store, guild = running.fake, running.store, running.fake.guild.id
        (command,) = [c for c in fake.registered_commands(guild) if c["name"] == "imagine-admin"]
        assert len(command["options"]) <= 25  # Discord's limit on sub-commands and groups
        (group,) = [o for o in command["options"] if o["name"] == "train-roles"]
        assert sorted(o["name"] for o in group["options"]) == ["add", "remove"]

        mods = fake.guild.role("Moderator")
        refused = await admin(fake, "imagine-admin train-roles add", {"role": mods.id}, user=fake.member)
        assert "missing Manage Server permission" in text_of(refused)
        added = await admin(fake, "imagine-admin train-roles add", {"role": mods.id})
        assert added["content"] == f"`train_roles` is now **<@&{mods.id}>** (was whoever may make images)."
        assert await store.get_guild_settings(guild) == {"train_roles": [mods.id]}

        policy = await load_policy(store, running.config, guild)
        here = frozenset({fake.channel.id})
        policy.check_training(fake.moderator.id, here, frozenset({mods.id}), photos=3, steps=100)
        with pytest.raises(NotAllowed, match=rf"<@&{mods.id}> \(`train_roles`\)"):
            policy.check_training(fake.member.id, here, NO_ROLES, photos=3, steps=100)

        removed = await admin(fake, "imagine-admin train-roles remove", {"role": mods.id})
        assert removed["content"] == "`train_roles` is now empty: **whoever may make images**."
        missing = await admin(fake, "imagine-admin train-roles remove", {"role": mods.id})
        assert "Nothing to remove: `train_roles`" in missing["content"]
        assert await store.get_guild_settings(guild) == {}
        assert [e.key for e in await store.audit_log(guild, limit=10)] == ["train_roles", "train_roles"]


# --- the operator's ceilings ----------------------------------------------------------------------------


def test_the_operator_sets_the_training_ceilings_in_limits(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[limits]\nmax_train_steps = 400\nmax_train_photos = 8\ndaily_trainings_per_user = 0\n")
    limits = load_config(path).limits
    assert (limits.max_train_steps, limits.max_train_photos, limits.daily_trainings_per_user) == (400, 8, 0)
    for line, message in (
        ("max_train_photos = 2", "max_train_photos must be from 3 to 20, not 2"),  # no server could set any
        ("max_train_photos = 21", "max_train_photos must be from 3 to 20, not 21"),
        ("max_train_steps = 6000", "max_train_steps must be from 1 to 5000, not 6000"),
        ("daily_trainings_per_user = -1", "daily_trainings_per_user must be from 0 to"),
    ):
        path.write_text(f"[limits]\n{line}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path)
