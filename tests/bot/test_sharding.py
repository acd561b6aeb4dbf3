"""`[discord] shards`: the real bot as discord.py's AutoShardedBot against the fake gateway's shards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from bot.app import ShardedImagineBot
from bot.config import ConfigError, load_config
from bot.runner import bot_parts
from generation.engine import Engine
from tests.bot.conftest import Running, has_image, make_config
from tests.fake_discord import FakeDiscord, FakeGuild, running_client
from tests.fake_discord.gateway import shard_of


@asynccontextmanager
async def sharded_bot(
    fake: FakeDiscord, model_dir: Path, data: Path, engine: Engine, shards: int | str
) -> AsyncIterator[Running]:
    """The bot with `[discord] shards` set and commands synced to every guild of the fake."""
    config = make_config(fake, model_dir, data)
    guild_ids = tuple(g.id for g in fake.world.guilds)
    config = replace(config, discord=replace(config.discord, shards=shards, guild_ids=guild_ids))
    engine.models = config.model_map
    async with bot_parts(config, engine) as (bot, worker), running_client(bot, fake, ready_timeout=30):
        await fake.wait_until(lambda: all(fake.registered_commands(g) for g in guild_ids) or None)
        yield Running(fake, bot, worker, config)


def second_guild(fake: FakeDiscord) -> FakeGuild:
    """A guild on the other of two shards than the default one."""
    return fake.add_guild("Second Server", shard=(1 - shard_of(fake.guild.id, 2), 2))


def interactions_on(fake: FakeDiscord, shard: int) -> set[int]:
    """The guilds of the INTERACTION_CREATEs that went out on a shard's session."""
    frames = fake.gateway.shards[shard].events
    return {int(f["d"]["guild_id"]) for f in frames if f["t"] == "INTERACTION_CREATE"}


async def test_two_shards_each_answer_the_imagine_of_their_own_guilds(
    fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, bot_engine: Engine
) -> None:
    fake = fake_discord
    fake.gateway.max_concurrency = 2  # both shards may start at once, as Discord allows larger bots
    other = second_guild(fake)
    async with sharded_bot(fake, tiny_sd_dir, tmp_path, bot_engine, 2) as running:
        bot = running.bot
        assert isinstance(bot, ShardedImagineBot) and bot.shard_count == 2
        identified = sorted(e.data["shard"] for e in fake.gateway.log if e.kind == "identify")
        assert identified == [[0, 2], [1, 2]]
        for guild in (fake.guild, other):
            assert bot.get_guild(guild.id).shard_id == shard_of(guild.id, 2)
        handles = [
            await fake.send_slash_command("imagine", {"prompt": f"a lighthouse in {guild.name}"}, channel_id=channel)
            for guild, channel in ((fake.guild, fake.channel.id), (other, other.channel("general").id))
        ]
        for handle in handles:
            final = await handle.wait_for_original(has_image, timeout=60)
            assert "a lighthouse in" in final["content"]
    # Each guild's interaction went out on its own shard only, and was answered there.
    assert interactions_on(fake, shard_of(fake.guild.id, 2)) == {fake.guild.id}
    assert interactions_on(fake, shard_of(other.id, 2)) == {other.id}


async def test_auto_takes_the_shard_count_from_gateway_bot_and_keeps_the_configured_gateway(
    fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, bot_engine: Engine
) -> None:
    fake = fake_discord
    fake.gateway.guilds_per_shard = 1  # two guilds: GET /gateway/bot recommends two shards
    fake.gateway.max_concurrency = 2
    other = second_guild(fake)
    async with sharded_bot(fake, tiny_sd_dir, tmp_path, bot_engine, "auto") as running:
        assert running.bot.shard_count == 2
        asked = [r for r in fake.requests if r.path == "/gateway/bot"]
        assert len(asked) == 1 and asked[0].response["shards"] == 2
        # /gateway/bot answers the fake's root URL; the bot still connects where [discord] gateway_url says.
        assert {e.data["path"] for e in fake.gateway.log if e.kind == "connect"} == {"/gateway"}
        handle = await fake.send_slash_command(
            "imagine", {"prompt": "a quiet harbour"}, channel_id=other.channel("general").id
        )
        assert has_image(await handle.wait_for_original(has_image, timeout=60))
    assert interactions_on(fake, shard_of(other.id, 2)) == {other.id}


@pytest.mark.parametrize(("value", "expected"), [('"auto"', "auto"), ("4", 4), (None, None)])
def test_shards_config(tmp_path: Path, value: str | None, expected: int | str | None) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[discord]\nshards = {value}\n" if value else "[discord]\n")
    assert load_config(path).discord.shards == expected


@pytest.mark.parametrize("value", ["0", '"two"', "true", "1.5"])
def test_shards_config_refuses_what_is_not_a_count(tmp_path: Path, value: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[discord]\nshards = {value}\n")
    with pytest.raises(ConfigError, match=r'\[discord\] shards must be "auto" or a whole number of at least 1'):
        load_config(path)
