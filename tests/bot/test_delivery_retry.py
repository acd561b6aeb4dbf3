"""Deliveries retry while the bot runs: a REST outage, lost answers, missing permissions, a channel or server that
is gone; the back-off schedule and which failures are worth another try."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import discord
import pytest
from PIL import Image

from bot.history import history_line
from bot.retry import CHANNEL_GONE, EDIT_TRIES, SERVER_LEFT, Backoff, EditTries, Verdict, verdict
from bot.runner import bot_parts
from generation.engine import Engine
from storage.records import JobRecord, JobStatus
from tests.bot.conftest import Running, button, delivered_job, has_image, make_config, slow_steps
from tests.fake_discord import FakeDiscord, InteractionHandle, Permission, RecordedRequest, running_client
from tests.support.threads import one_torch_thread

# The production schedule (2 s doubling to 5 minutes), a 60-second outage and discord.py's own pauses between
# its retries, all run a hundred times faster.
SCALE = 0.01
FIRST, CAP, OUTAGE = 2.0 * SCALE, 300.0 * SCALE, 60.0 * SCALE
JITTER = Backoff().jitter
# discord.py 2.7 sends an interaction-webhook request (the edit of a result) up to 5 times while it is answered
# 5xx, pausing 1, 3, 5, 7 and 9 s, before it raises: each of our failed tries is 5 requests in the fake's log.
WEBHOOK_TRIES = 5


@pytest.fixture(autouse=True)
def discord_py_pauses_scaled(monkeypatch: pytest.MonkeyPatch) -> None:
    """discord.py's pauses between its own retries (25 s per webhook request in an outage) on the same scale."""

    async def sleep(delay: float, result: object = None) -> object:
        return await asyncio.sleep(delay * SCALE, result)

    scaled = SimpleNamespace(**{**vars(asyncio), "sleep": sleep})
    for module in (discord.webhook.async_, discord.http):
        monkeypatch.setattr(module, "asyncio", scaled)


@asynccontextmanager
async def retrying_bot(fake: FakeDiscord, model_dir: Path, data: Path, engine: Engine) -> AsyncIterator[Running]:
    """The bot on the scaled back-off, commands synced to every guild of the fake, training 2 steps a turn."""
    config = make_config(fake, model_dir, data)
    guild_ids = tuple(g.id for g in fake.world.guilds)
    settings = dataclasses.replace(
        config.discord, guild_ids=guild_ids, delivery_retry_first=FIRST, delivery_retry_max=CAP
    )
    generation = dataclasses.replace(config.generation, train_chunk_steps=2, train_learning_rate=5e-2)
    config = dataclasses.replace(config, discord=settings, generation=generation)
    engine.models = config.model_map
    async with bot_parts(config, engine) as (bot, worker), running_client(bot, fake):
        await fake.wait_until(lambda: all(fake.registered_commands(g) for g in guild_ids) or None)
        yield Running(fake, bot, worker, config)


@pytest.fixture
def start(fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, bot_engine: Engine):
    """`async with start() as running:` — the bot with deliveries retried on the scaled schedule."""
    return lambda: retrying_bot(fake_discord, tiny_sd_dir, tmp_path, bot_engine)


def job_id(queued: dict) -> int:
    return int(button(queued["data"], "imagine:cancel").split(":")[2])


def carries_result(request: RecordedRequest, prefix: str = "imagine-") -> bool:
    """Whether a request uploads a result (a training's: `prefix="sample-"`)."""
    return any(f.filename.startswith(prefix) for f in request.files)


def result_edits(fake: FakeDiscord, token: str, prefix: str = "imagine-") -> list[RecordedRequest]:
    """Answered edits of an interaction's message that carried the result."""
    return [
        r for r in fake.requests if r.method == "PATCH" and token in r.path and r.answered and carries_result(r, prefix)
    ]


def result_posts(fake: FakeDiscord, channel_id: int) -> list[RecordedRequest]:
    path = f"/channels/{channel_id}/messages"
    return [r for r in fake.requests if r.method == "POST" and r.path == path and carries_result(r) and r.answered]


async def jobs_reach(running: Running, job_ids: list[int], done: Callable[[JobRecord], bool]) -> None:
    async with asyncio.timeout(60):
        while not all(done(job) for job in [await running.store.get_job(j) for j in job_ids] if job):
            await asyncio.sleep(0.01)


async def imagine(running: Running, prompt: str, steps: int = 12, **where) -> tuple[InteractionHandle, int]:
    """Send /imagine (`where`: user, channel_id); the handle and the job id once the bot answered it."""
    handle = await running.fake.send_slash_command("imagine", {"prompt": prompt, "steps": steps}, **where)
    return handle, job_id(await handle.wait_for_callback())


async def test_results_finished_during_a_60_second_outage_are_each_delivered_once_without_a_restart(start) -> None:
    async with start() as running:
        fake, delivery = running.fake, running.bot.delivery
        users = [fake.member, fake.other_member, fake.moderator]
        with slow_steps(running.worker.engine, 0.05):
            # A longer job first, so the three queue behind it and then run together, as one batch.
            lighthouse, first = await imagine(running, "a lighthouse", steps=24)
            await jobs_reach(running, [first], lambda j: j.status is JobStatus.RUNNING)
            sent = [await imagine(running, f"storm over {u.username}'s house", 16, user=u) for u in users]
            handles, jobs = [h for h, _ in sent], [j for _, j in sent]
            await jobs_reach(running, jobs, lambda j: j.status is JobStatus.RUNNING)
            await delivered_job(running, first)  # the lighthouse's result is out before the outage
            fake.start_outage()  # every REST request: 503 Service Unavailable; the gateway stays up
            began = time.monotonic()
            await jobs_reach(running, jobs, lambda j: j.status is JobStatus.DONE)
        tried_twice = 2 * WEBHOOK_TRIES  # every result has failed two of the bot's tries (discord.py's five each)
        await fake.wait_until(lambda: all(len(result_edits(fake, h.token)) >= tried_twice for h in handles) or None, 30)
        await asyncio.sleep(max(0.0, began + OUTAGE - time.monotonic()))
        fake.end_outage()
        for handle, job in zip(handles, jobs, strict=True):
            await handle.wait_for_original(has_image, timeout=30)
            await delivered_job(running, job)
        await asyncio.sleep(3 * FIRST)  # time for any second copy to show up
        assert [r.status for r in result_edits(fake, lighthouse.token)] == [200]
        failed = 0
        for handle, job in zip(handles, jobs, strict=True):
            edits = result_edits(fake, handle.token)
            refused = [r for r in edits if r.status == 503]
            assert [r.status for r in edits] == [503] * len(refused) + [200], "one edit went through, the last"
            assert (await running.store.get_job(job)).delivered_where.startswith("edit:")
            failed += len(refused) // WEBHOOK_TRIES
        assert result_posts(fake, fake.channel.id) == []  # the edits were retried, never turned into posts
        assert delivery.failures_total == failed and delivery.retries_total == failed
        assert delivery.undeliverable_total == 0
        assert [e.kind for e in fake.gateway.log].count("identify") == 1  # no restart, not even a reconnect


async def test_an_answer_lost_on_the_way_back_does_not_make_a_second_copy(start) -> None:
    async with start() as running:
        fake = running.fake
        # An edit that went through, its answer lost with the connection: the retry repeats the same edit.
        fake.inject("PATCH", r"^/webhooks/", None, lose_response=True, where=carries_result)
        edited, edited_job = await imagine(running, "a paper boat")
        await edited.wait_for_original(has_image, timeout=60)
        await delivered_job(running, edited_job)
        assert [r.status for r in result_edits(fake, edited.token)] == [0, 200]  # 0: the connection was cut
        assert result_posts(fake, fake.channel.id) == []
        # A post that went through, its answer lost: the retry's nonce returns the first message.
        fake.inject("POST", r"^/channels/\d+/messages$", None, lose_response=True, where=carries_result)
        with slow_steps(running.worker.engine, 0.05):
            posted, posted_job = await imagine(running, "a paper plane")
            await fake.delete_message(fake.store.get(posted.original_message_id))  # nothing left to edit
            job = await delivered_job(running, posted_job, timeout=60)
        posts = result_posts(fake, fake.channel.id)
        assert [r.status for r in posts] == [0, 200] and posts[0].json["nonce"] == posts[1].json["nonce"]
        copies = [m for m in fake.messages() if has_image(m) and "a paper plane" in m["content"]]
        assert [m["id"] for m in copies] == [posts[1].response["id"]]
        assert job.delivered_where == f"channel:{copies[0]['id']}"
        # Edits answered 5xx again and again while posts work: after EDIT_TRIES tries, one post instead.
        fake.inject("PATCH", r"^/webhooks/", 503, times=None, where=carries_result)
        stuck, stuck_job = await imagine(running, "a paper crane")
        job = await delivered_job(running, stuck_job, timeout=60)
        assert len(result_edits(fake, stuck.token)) == EDIT_TRIES * WEBHOOK_TRIES
        [post] = [r for r in result_posts(fake, fake.channel.id) if "a paper crane" in r.json["content"]]
        assert job.delivered_where == f"channel:{post.response['id']}"


async def test_a_result_refused_for_missing_permissions_goes_out_once_they_are_given_back(start) -> None:
    async with start() as running:
        fake, delivery = running.fake, running.bot.delivery
        deny = {"id": str(fake.guild.role("imagine-bot").id), "type": 0, "allow": "0"}
        deny["deny"] = str(Permission.SEND_MESSAGES)
        with slow_steps(running.worker.engine, 0.05):
            handle, job = await imagine(running, "a locked door")
            await fake.delete_message(fake.store.get(handle.original_message_id))  # the result must be posted
            fake.channel.permission_overwrites.append(deny)
            await fake.wait_until(lambda: len(result_posts(fake, fake.channel.id)) >= 5 or None, 60)
        fake.channel.permission_overwrites.remove(deny)  # a moderator gives Send Messages back
        record = await delivered_job(running, job, timeout=30)
        posts = result_posts(fake, fake.channel.id)
        assert {r.response["code"] for r in posts[:-1]} == {50013} and posts[-1].status == 200
        assert record.delivered_where == f"channel:{posts[-1].response['id']}"
        assert delivery.retries_total == len(posts) - 1 and delivery.undeliverable_total == 0
        # discord.py raises a 403 at once: the pauses between the posts are the bot's back-off, doubling.
        gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(posts)]
        assert all(gap >= (1 - JITTER) * FIRST * 2**n for n, gap in enumerate(gaps)), gaps


async def test_a_deleted_channel_or_a_removed_bot_is_recorded_undeliverable_and_shown_in_history(
    fake_discord: FakeDiscord, start
) -> None:
    other = fake_discord.add_guild("Second Server")
    async with start() as running:
        fake, delivery = running.fake, running.bot.delivery
        art = fake.guild.channel("art")
        with slow_steps(running.worker.engine, 0.05):
            _, in_art = await imagine(running, "a gallery wall", channel_id=art.id)
            handle, elsewhere = await imagine(running, "a far island", channel_id=other.channel("general").id)
            await fake.delete_channel(art)
            await fake.delete_message(fake.store.get(handle.original_message_id))
            await fake.remove_bot(other)
            await fake.wait_until(lambda: running.bot.get_guild(other.id) is None or None)
            records = [await delivered_job(running, j, timeout=60) for j in (in_art, elsewhere)]
        assert [r.delivered_where for r in records] == [CHANNEL_GONE, SERVER_LEFT]
        assert (delivery.undeliverable_total, delivery.retries_total) == (2, 0)  # given up at once, not retried
        listing = await fake.send_slash_command("history", {})
        (embed,) = (await listing.wait_for_callback())["data"]["embeds"]
        line = next(line for line in embed["description"].splitlines() if f"`#{in_art}`" in line)
        assert line.endswith("could not be delivered: the channel is gone") and "](" not in line
    assert "the bot was removed from that server" in history_line(records[1])


def photo(i: int) -> tuple[str, bytes, str]:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (40 * i, 120, 200)).save(buffer, format="PNG")
    return (f"photo-{i}.png", buffer.getvalue(), "image/png")


async def test_a_training_finished_during_an_outage_is_delivered_once_it_ends(start) -> None:
    with one_torch_thread():
        async with start() as running:
            fake, store = running.fake, running.store
            fields = {"name": "Blue cup", "trigger": "sks", "subject": "cup", "steps": 6}
            photos = {f"photo{i}": photo(i) for i in range(1, 5)}
            handle = await fake.send_slash_command("train", fields, attachments=photos)
            await handle.wait_for_original(lambda m: bool(m.get("content")), timeout=30)  # queued: photos read
            fake.start_outage()
            async with asyncio.timeout(120):
                while not (training := (await store.undelivered_trainings() or [None])[0]):
                    await asyncio.sleep(0.05)
            assert training.status is JobStatus.DONE
            tried_twice = 2 * WEBHOOK_TRIES
            await fake.wait_until(lambda: len(result_edits(fake, handle.token, "sample-")) >= tried_twice or None, 30)
            fake.end_outage()
            done = await handle.wait_for_original(lambda m: "✅ Done" in (m.get("content") or ""), timeout=30)
            assert any(a["filename"].startswith("sample-") for a in done["attachments"])
            edits = result_edits(fake, handle.token, "sample-")
            assert [r.status for r in edits][-1] == 200 and {r.status for r in edits[:-1]} == {503}
            assert running.bot.training_delivery.retries_total == (len(edits) - 1) // WEBHOOK_TRIES
            async with asyncio.timeout(10):  # recorded just after the message went out
                while (await store.get_training(training.id)).delivered_at is None:
                    await asyncio.sleep(0.02)


def test_the_back_off_doubles_from_2_seconds_to_5_minutes_with_jitter() -> None:
    backoff = Backoff()
    assert [backoff.delay(n, rand=lambda: 0.5) for n in range(1, 11)] == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert backoff.delay(1, rand=lambda: 0.0) == 1.5 and backoff.delay(3, rand=lambda: 1.0) == 10.0
    assert backoff.delay(10_000, rand=lambda: 1.0) == 300  # capped, jitter included, after days of retries
    with pytest.raises(ValueError, match="first <= cap"):
        Backoff(first=10, cap=5)


def http_error(cls: type[discord.HTTPException], status: int, code: int = 0) -> discord.HTTPException:
    return cls(SimpleNamespace(status=status, reason="test"), {"message": "test", "code": code})


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (http_error(discord.DiscordServerError, 503), Verdict.RETRY),
        (http_error(discord.DiscordServerError, 500), Verdict.RETRY),  # after discord.py's own ~25 s of tries
        (http_error(discord.HTTPException, 429), Verdict.RETRY),
        (http_error(discord.Forbidden, 403, 50013), Verdict.RETRY),  # Missing Permissions: can be given back
        (http_error(discord.NotFound, 404, 10003), Verdict.GONE),  # Unknown Channel
        (http_error(discord.NotFound, 404, 10004), Verdict.GONE),  # Unknown Guild
        (http_error(discord.NotFound, 404, 10008), Verdict.GIVE_UP),  # Unknown Message: post anew, not here
        (http_error(discord.HTTPException, 400, 50035), Verdict.GIVE_UP),  # a bad request stays bad
        (aiohttp.ClientConnectionError("connection reset"), Verdict.RETRY),
        (ConnectionRefusedError(111, "Connection refused"), Verdict.RETRY),
        (TimeoutError(), Verdict.RETRY),
        (FileNotFoundError(2, "image gone"), Verdict.GIVE_UP),
        (ValueError("a bug"), Verdict.GIVE_UP),
    ],
)
def test_which_failures_are_retried(error: BaseException, expected: Verdict) -> None:
    assert verdict(error) is expected


def test_an_edit_that_may_have_landed_is_tried_again_and_a_refused_one_is_posted_anew() -> None:
    passing = EditTries()
    outcomes = [passing.failed_in_passing(http_error(discord.DiscordServerError, 503)) for _ in range(EDIT_TRIES)]
    assert outcomes == [True] * (EDIT_TRIES - 1) + [False] and passing.gone
    assert EditTries().failed_in_passing(aiohttp.ServerDisconnectedError())  # the answer may be all that was lost
    for refused in (http_error(discord.HTTPException, 429), http_error(discord.Forbidden, 403, 50013)):
        tries = EditTries()
        assert not tries.failed_in_passing(refused) and tries.gone
