"""JobQueue.submit's limits against a real store whose clock the test moves (no GPU needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from jobs.events import EventBus
from jobs.limits import LimitExceeded, Limits
from jobs.queue import JobQueue, Requester
from storage.store import Store
from tests.storage.factories import FakeClock
from tests.support.requests import txt2img


@pytest.fixture
async def clocked(tmp_path) -> AsyncIterator[tuple[Store, FakeClock]]:
    clock = FakeClock()
    async with await Store.open(tmp_path / "db.sqlite3", tmp_path / "images", clock=clock) as store:
        yield store, clock


async def test_cooldown_between_jobs_per_guild(clocked) -> None:
    store, clock = clocked
    queue = JobQueue(store, EventBus(), Limits(cooldown_seconds=30))
    await store.set_guild_setting(2, "cooldown_seconds", 0, by_user=9)
    member = Requester(user_id=1, guild_id=1)
    await queue.submit(txt2img(), member)
    clock.advance(seconds=10)
    with pytest.raises(LimitExceeded, match=r"cooldown between jobs is 30 s; try again in 20 s"):
        await queue.submit(txt2img(), member)
    await queue.submit(txt2img(), Requester(user_id=2, guild_id=1))  # someone else
    await queue.submit(txt2img(), Requester(user_id=1, guild_id=2))  # a server without a cooldown
    clock.advance(seconds=20)
    await queue.submit(txt2img(), member)


async def test_limits_hold_against_simultaneous_submits(clocked) -> None:
    store, _ = clocked
    queue = JobQueue(store, EventBus(), Limits(daily_images_per_user=2))
    member = Requester(user_id=1, guild_id=1)
    results = await asyncio.gather(*(queue.submit(txt2img(), member) for _ in range(5)), return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 2
    assert all(isinstance(r, LimitExceeded) for r in results if isinstance(r, Exception))
    assert (await store.usage(1, 1)).images == 2
