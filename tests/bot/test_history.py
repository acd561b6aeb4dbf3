"""/history, /queue and /cancel end to end: the real client, the fake Discord, a real store and queue."""

from __future__ import annotations

import re

from jobs.queue import Requester
from storage.records import JobStatus
from tests.bot.conftest import Running
from tests.fake_discord import FakeUser
from tests.support.requests import txt2img

EPHEMERAL = 64
UPDATE_MESSAGE = 7


async def submit(running: Running, user: FakeUser, prompt: str, *, origin: dict | None = None) -> int:
    """Queue a job for `user` in #general, as /imagine would (no Discord message of its own)."""
    fake = running.fake
    requester = Requester(user_id=user.id, guild_id=fake.guild.id, channel_id=fake.channel.id)
    ticket = await running.bot.services.queue.submit(txt2img(prompt), requester, origin=origin)
    return ticket.job.id


def lines(message: dict) -> list[str]:
    (embed,) = message["embeds"]
    return embed["description"].splitlines()


def listed_ids(message: dict) -> list[int]:
    return [int(re.match(r"`#(\d+)`", line)[1]) for line in lines(message)]


def buttons(message: dict) -> dict[str, dict]:
    return {c["label"]: c for row in message["components"] for c in row["components"]}


async def click(running: Running, message_id: int, label: str, user: FakeUser) -> dict:
    """Click a pager button; returns the callback body."""
    message = running.fake.message(message_id)
    handle = await running.fake.send_button_click(message_id, buttons(message)[label]["custom_id"], user=user)
    return await handle.wait_for_callback()


async def ephemeral_text(running: Running, command: str, options: dict | None = None, *, user: FakeUser) -> str:
    handle = await running.fake.send_slash_command(command, options or {}, user=user)
    callback = await handle.wait_for_callback()
    assert callback["data"]["flags"] & EPHEMERAL
    return callback["data"].get("content") or ""


async def test_history_pages_newest_first_and_only_the_caller_can_page(start_bot) -> None:
    async with start_bot(max_queued_per_user=20) as running:
        await running.worker.stop()  # keep every job queued: only the listing matters here
        fake = running.fake
        alice, bob = fake.member, fake.other_member
        linked = await submit(running, alice, "a linked fox", origin={"channel_id": fake.channel.id, "message_id": 42})
        ids = [linked] + [await submit(running, alice, f"picture number {i} of **bold** @everyone") for i in range(11)]
        await submit(running, bob, "bob's secret owl")

        handle = await fake.send_slash_command("history", user=alice)
        callback = await handle.wait_for_callback()
        assert callback["type"] == 4 and callback["data"]["flags"] & EPHEMERAL
        first = await handle.wait_for_original()
        assert listed_ids(first) == ids[::-1][:8]
        line = lines(first)[0]
        assert re.search(r"<t:\d+:R>", line) and "⏳ queued" in line and "seed 7" in line and "tiny" in line
        assert "\\*\\*bold\\*\\*" in line and "@\u200beveryone" in line
        assert first["embeds"][0]["footer"]["text"].startswith("Page 1")
        assert buttons(first)["◀ Prev"].get("disabled") and not buttons(first)["Next ▶"].get("disabled")

        refused = await click(running, handle.original_message_id, "Next ▶", bob)
        assert refused["data"]["flags"] & EPHEMERAL and "Only the person who ran /history" in refused["data"]["content"]
        assert listed_ids(fake.message(handle.original_message_id)) == ids[::-1][:8]

        turned = await click(running, handle.original_message_id, "Next ▶", alice)
        assert turned["type"] == UPDATE_MESSAGE
        second = fake.message(handle.original_message_id)
        assert listed_ids(second) == ids[::-1][8:]
        assert f"[message](https://discord.com/channels/{fake.guild.id}/{fake.channel.id}/42)" in lines(second)[-1]
        assert second["embeds"][0]["footer"]["text"].startswith("Page 2")
        assert buttons(second)["Next ▶"].get("disabled") and not buttons(second)["◀ Prev"].get("disabled")

        await click(running, handle.original_message_id, "◀ Prev", alice)
        assert listed_ids(fake.message(handle.original_message_id)) == ids[::-1][:8]


async def test_history_search_and_empty_answers(start_bot) -> None:
    async with start_bot() as running:
        await running.worker.stop()
        fake = running.fake
        alice, bob = fake.member, fake.other_member
        fox = await submit(running, alice, "a red fox in the snow")
        await submit(running, alice, "an owl at night")
        await submit(running, bob, "a fox of bob's")

        handle = await fake.send_slash_command("history", {"search": "FOX"}, user=alice)
        found = await handle.wait_for_original()
        assert listed_ids(found) == [fox] and "matching 'FOX'" in found["embeds"][0]["title"]
        assert await ephemeral_text(running, "history", {"search": "zebra"}, user=alice) == "No jobs match 'zebra'."
        moderator = fake.moderator
        assert await ephemeral_text(running, "history", user=moderator) == "You have no images here yet."


async def test_other_peoples_history_is_for_moderators_only(start_bot) -> None:
    async with start_bot() as running:
        await running.worker.stop()
        fake = running.fake
        alice, bob = fake.member, fake.other_member
        bobs = await submit(running, bob, "bob's owl")

        refusal = await ephemeral_text(running, "history", {"user": bob}, user=alice)
        assert "Only moderators (Manage Server or Manage Messages)" in refusal

        handle = await fake.send_slash_command("history", {"user": bob}, user=fake.moderator)
        shown = await handle.wait_for_original()
        assert listed_ids(shown) == [bobs] and shown["embeds"][0]["title"] == "Images by Bob"
        empty = await ephemeral_text(running, "history", {"user": alice}, user=fake.moderator)
        assert empty == f"<@{alice.id}> has no images here yet."


async def test_queue_shows_running_and_places_in_line(start_bot) -> None:
    async with start_bot() as running:
        await running.worker.stop()
        fake = running.fake
        queue = running.bot.services.queue
        alice, bob = fake.member, fake.other_member
        first = await submit(running, alice, "first")
        second = await submit(running, alice, "second")
        bobs = await submit(running, bob, "bob's")
        third = await submit(running, alice, "third")
        # Do what the worker does with the job at the front: take it and mark it running.
        (taken,) = await queue.next_batch(1)
        assert taken.job_id == first and await running.store.mark_running([first]) == [first]

        text = await ephemeral_text(running, "queue", user=alice)
        rows = text.splitlines()
        assert rows[1].startswith(f"`#{first}` · 🎨 running now")
        assert [int(re.match(r"`#(\d+)`", r)[1]) for r in rows[1:-1]] == [first, second, third]
        assert queue.position(bobs) == 1  # bob's turn: alice just had one
        assert f"`#{second}` · ⏳ #2 in line" in text and f"`#{third}` · ⏳ #3 in line" in text
        assert "bob" not in text
        assert rows[-1] == "3 job(s) waiting in the queue overall."

        nothing = await ephemeral_text(running, "queue", user=fake.moderator)
        assert nothing == "You have nothing queued or running. 3 job(s) waiting in the queue overall."


async def test_cancel_own_jobs_and_moderators_cancel_anyones(start_bot) -> None:
    async with start_bot() as running:
        await running.worker.stop()
        fake = running.fake
        queue = running.bot.services.queue
        alice, bob = fake.member, fake.other_member
        older = await submit(running, alice, "older")
        newer = await submit(running, alice, "newer")
        bobs = await submit(running, bob, "bob's")

        assert await ephemeral_text(running, "cancel", {"job": older}, user=alice) == f"Cancelled job {older}."
        assert (await running.store.get_job(older)).status is JobStatus.CANCELLED and queue.position(older) is None
        again = await ephemeral_text(running, "cancel", {"job": older}, user=alice)
        assert again == f"⚠️ Job {older} already finished (cancelled)."
        assert await ephemeral_text(running, "cancel", user=alice) == f"Cancelled job {newer}."  # most recent active
        assert await ephemeral_text(running, "cancel", user=alice) == "⚠️ You have no queued or running jobs to cancel."
        assert "⚠️ There is no job 999999" in await ephemeral_text(running, "cancel", {"job": 999999}, user=alice)

        refused = await ephemeral_text(running, "cancel", {"job": bobs}, user=alice)
        assert f"Only the person who asked for job {bobs}, or a moderator" in refused
        assert (await running.store.get_job(bobs)).status is JobStatus.QUEUED
        assert await ephemeral_text(running, "cancel", {"job": bobs}, user=fake.moderator) == f"Cancelled job {bobs}."
        assert len(queue) == 0


async def test_cancel_autocomplete_lists_own_active_jobs(start_bot) -> None:
    async with start_bot() as running:
        await running.worker.stop()
        fake = running.fake
        alice, bob = fake.member, fake.other_member
        done = await submit(running, alice, "a cat that will be cancelled")
        await running.bot.services.queue.cancel(done)
        cat = await submit(running, alice, "a cat on a mat")
        dog = await submit(running, alice, "a dog in a fog")
        await submit(running, bob, "bob's cat")

        everything = await fake.send_autocomplete("cancel", {}, focused="job", user=alice)
        choices = await everything.wait_for_choices()
        assert [c["value"] for c in choices] == [dog, cat]
        assert choices[1]["name"] == f"#{cat} · queued · a cat on a mat"
        by_word = await fake.send_autocomplete("cancel", {"job": "CAT"}, focused="job", user=alice)
        assert [c["value"] for c in await by_word.wait_for_choices()] == [cat]
        by_id = await fake.send_autocomplete("cancel", {"job": str(dog)}, focused="job", user=alice)
        assert [c["value"] for c in await by_id.wait_for_choices()] == [dog]
