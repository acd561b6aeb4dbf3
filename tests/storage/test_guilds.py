"""Guild settings with their audit trail, and daily usage counters."""

from __future__ import annotations

from storage import Store
from tests.storage.factories import FakeClock, txt2img


async def test_settings_and_audit(store: Store, clock: FakeClock) -> None:
    assert await store.get_guild_settings(1) == {}
    await store.set_guild_setting(1, "max_per_day", 20, by_user=100)
    clock.advance(minutes=1)
    await store.set_guild_setting(1, "max_per_day", 50, by_user=101)
    await store.set_guild_setting(1, "max_per_day", 50, by_user=101)  # unchanged: no audit row
    await store.set_guild_setting(1, "blocked_words", ["gore", "x"], by_user=100)
    await store.set_guild_setting(2, "nsfw", False, by_user=200)

    assert await store.get_guild_settings(1) == {"max_per_day": 50, "blocked_words": ["gore", "x"]}
    assert await store.get_guild_settings(2) == {"nsfw": False}
    log = await store.audit_log(1)
    assert [(e.user_id, e.key, e.old, e.new) for e in log] == [
        (100, "blocked_words", None, ["gore", "x"]),
        (101, "max_per_day", 20, 50),
        (100, "max_per_day", None, 20),
    ]
    assert log[1].at == clock.now and log[2].at < log[1].at
    assert len(await store.audit_log(1, limit=1)) == 1


async def test_reset_setting(store: Store) -> None:
    await store.set_guild_setting(1, "max_count", 2, by_user=100)
    assert await store.reset_guild_setting(1, "max_count", by_user=101)
    assert not await store.reset_guild_setting(1, "max_count", by_user=101)
    assert await store.get_guild_settings(1) == {}
    assert [(e.old, e.new) for e in await store.audit_log(1)] == [(2, None), (None, 2)]


async def test_usage_counts_at_creation_per_guild_and_day(store: Store, clock: FakeClock) -> None:
    await store.create_job(txt2img(count=3), user_id=1, guild_id=10, channel_id=5)
    await store.create_job(txt2img(count=1), user_id=1, guild_id=10, channel_id=5)
    await store.create_job(txt2img(count=2), user_id=1, guild_id=None, channel_id=None)
    today = clock.now.date()
    usage = await store.usage(1, 10)
    assert (usage.day, usage.jobs, usage.images) == (today, 2, 4)
    dms = await store.usage(1, None)
    assert (dms.guild_id, dms.jobs, dms.images) == (None, 1, 2)

    clock.advance(minutes=2)  # past midnight UTC: a fresh day
    assert (await store.usage(1, 10)).jobs == 0
    await store.create_job(txt2img(count=4), user_id=1, guild_id=10, channel_id=5)
    assert ((await store.usage(1, 10)).images, (await store.usage(1, 10, today)).images) == (4, 4)
    assert (await store.usage(2, 10)).jobs == 0
