"""A server's settings are read once per job: to pick the model, admit the job and screen its images."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.bot.conftest import has_image


@dataclass
class Reads:
    """Guild-settings reads of one bot: all of them, and how many had happened when the queue got the job."""

    scopes: list[int] = field(default_factory=list)
    at_submit: list[int] = field(default_factory=list)  # reads so far, as JobQueue.submit starts
    after_submit: list[int] = field(default_factory=list)  # reads so far, as JobQueue.submit returns


@contextmanager
def counting_reads(running) -> Iterator[Reads]:
    """Wrap the store's settings read and the queue's submit of a running bot (both still do their work)."""
    reads = Reads()
    store, queue = running.store, running.bot.services.queue
    read, submit = store.get_guild_settings, queue.submit

    async def counted_read(guild_id: int):
        reads.scopes.append(guild_id)
        return await read(guild_id)

    async def counted_submit(*args, **kwargs):
        reads.at_submit.append(len(reads.scopes))
        try:
            return await submit(*args, **kwargs)
        finally:
            reads.after_submit.append(len(reads.scopes))

    store.get_guild_settings, queue.submit = counted_read, counted_submit
    try:
        yield reads
    finally:
        del store.get_guild_settings, queue.submit


async def imagine_once(running, forced_flags) -> Reads:
    """One /imagine whose image the safety checker flags, under a server policy that spoilers it."""
    fake = running.fake
    forced_flags.flags = [True]
    await running.store.set_guild_setting(fake.guild.id, "nsfw", "spoiler", by_user=fake.owner.id)
    with counting_reads(running) as reads:
        handle = await fake.send_slash_command("imagine", {"prompt": "a lighthouse"})
        final = await handle.wait_for_original(has_image, timeout=60)
    assert final["attachments"][0]["filename"].startswith("SPOILER_")  # the policy read at the gate was applied
    return reads


async def test_one_read_before_queueing_and_none_at_delivery(start_custom_bot, checked_engine, forced_flags) -> None:
    async with start_custom_bot(engine=checked_engine) as running:
        reads = await imagine_once(running, forced_flags)
        assert reads.at_submit == [1], reads  # the model, the gate: one read of the server's settings
        assert reads.scopes[0] == running.fake.guild.id
        assert len(reads.scopes) == reads.after_submit[0], reads  # NSFW screening at delivery reads nothing


async def test_one_read_for_the_whole_job(start_custom_bot, checked_engine, forced_flags) -> None:
    async with start_custom_bot(engine=checked_engine) as running:
        reads = await imagine_once(running, forced_flags)
        assert len(reads.scopes) == 1, reads
