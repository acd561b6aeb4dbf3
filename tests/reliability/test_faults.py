"""Faults while one real `imagine-bot run` process works: gateway drops, REST errors, deleted messages, OOM.

The process, the fake Discord and the SQLite file are shared by the module, as in production one process
lives through all of these; the last tests check what every earlier one sent and logged.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from tests.bot.conftest import has_image, png
from tests.fake_discord import FakeDiscord, FakeUser, InteractionHandle, RecordedRequest
from tests.reliability.mentions import bot_writes, violations
from tests.reliability.process import (
    BotProcess,
    add_members,
    is_progress_edit,
    max_in_flight,
    query,
    replying_to,
    result_files,
    write_config,
)
from tests.reliability.table import check

pytestmark = pytest.mark.asyncio(loop_scope="module")
Kind = Callable[[RecordedRequest], bool]
# Jobs must outlast a few progress edits (1.5 s apart) on any machine, so each step takes at least this.
SECONDS_PER_STEP = 0.1


@dataclass
class Rig:
    fake: FakeDiscord
    bot: BotProcess
    users: list[FakeUser]
    gpu_faults: Path

    def set_gpu_faults(self, **faults) -> None:
        """Switch the launcher's GPU faults (see launch.py); the module runs on a GPU of 0.1 s per step."""
        self.gpu_faults.write_text(json.dumps({"seconds_per_step": SECONDS_PER_STEP, **faults}))

    def job_owner(self, message_id: int) -> int | None:
        rows = query(self.bot.db, "SELECT user_id FROM jobs WHERE delivered_where = ?", (f"channel:{message_id}",))
        return rows[0]["user_id"] if rows else None

    async def imagine(self, user: FakeUser, prompt: str, **options) -> InteractionHandle:
        return await self.fake.send_slash_command("imagine", {"prompt": prompt, **options}, user=user)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tiny_sd_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    folder = tmp_path_factory.mktemp("faults")
    async with FakeDiscord(token=f"MTIz.{secrets.token_urlsafe(30)}") as fake:
        users = [fake.member, fake.other_member, *add_members(fake, ["carol", "dave", "erin", "frank"])]
        bot = BotProcess(
            write_config(folder, fake, tiny_sd_dir),
            fake,
            folder / "bot.log",
            module="tests.reliability.launch",
            env={"IMAGINE_GPU_FAULTS": str(folder / "gpu-faults.json")},
        )
        rig = Rig(fake, bot, users, folder / "gpu-faults.json")
        rig.set_gpu_faults()
        await bot.start()
        try:
            yield rig
        finally:
            await bot.stop()


def for_token(token: str, kind: Kind) -> Kind:
    """Requests on one interaction's webhook of one kind (progress edits, or result uploads)."""
    return lambda r: token in r.path and kind(r)


def uploads_result(request: RecordedRequest) -> bool:
    return bool(result_files(request))


def requests_for(fake: FakeDiscord, token: str, kind: Kind) -> list[RecordedRequest]:
    return [r for r in fake.requests if token in r.path and kind(r)]


async def test_gateway_drop_and_reconnect_while_jobs_run(rig: Rig) -> None:
    fake, users = rig.fake, rig.users
    since = len(fake.gateway.log)
    picture = await fake.post_user_message("a picture", attachments=[("pic.png", png(), "image/png")], user=users[4])
    handles = [await rig.imagine(user, f"gateway {i}", steps=30) for i, user in enumerate(users[:4])]
    await fake.wait_for_request(lambda r: is_progress_edit(r) and handles[0].token in r.path, timeout=60)
    dropped = time.monotonic()
    await fake.drop_gateway()
    reply = await fake.post_user_message("make it winter", reply_to=int(picture["id"]), user=users[4])
    posted_while_down = not fake.gateway.connected  # so the bot can only see it replayed on RESUME
    await fake.wait_for_gateway("resumed", since=since, timeout=30)
    resumed_after = time.monotonic() - dropped
    mark = len(fake.gateway.log)
    await fake.send_reconnect()
    await fake.wait_for_gateway("resumed", since=mark, timeout=30)
    after = await rig.imagine(users[5], "after reconnect")
    delivered = [await h.wait_for_original(has_image, timeout=120) for h in [*handles, after]]
    remixed = await fake.wait_for_message(lambda m: replying_to(fake, reply)(m) and has_image(m), timeout=120)
    identifies = sum(e.kind == "identify" for e in fake.gateway.log[since:])
    resumes = sum(e.kind == "resumed" for e in fake.gateway.log[since:])
    check(
        "gateway",
        "connection dropped (TCP abort) while 4 jobs run",
        "client resumes the session; every result arrives",
        f"RESUMED {resumed_after * 1000:.0f} ms after the drop, no new IDENTIFY; "
        f"{len(delivered) - 1}/4 results delivered",
        identifies == 0 and resumes >= 1 and len(delivered) == 5,
    )
    check(
        "gateway",
        "a remix reply sent while disconnected",
        "replayed on RESUME and answered",
        f"sent while disconnected: {posted_while_down}; answered with its image",
        posted_while_down and has_image(remixed),
    )
    check(
        "gateway",
        "op 7 RECONNECT while jobs run",
        "client resumes; commands after it work",
        f"RESUMED ({resumes} resumes, {identifies} IDENTIFY); /imagine sent after it delivered",
        resumes >= 2 and identifies == 0,
    )


async def test_rate_limits_and_server_errors_on_result_uploads_and_progress_edits(rig: Rig) -> None:
    fake, users = rig.fake, rig.users
    hooks = "/webhooks/"
    handles = [await rig.imagine(user, f"rest fault {i}", steps=40) for i, user in enumerate(users)]
    a, b, c, d, e, f = (h.token for h in handles)
    fake.inject("PATCH", hooks, 429, times=2, retry_after=0.5, where=for_token(a, uploads_result))
    fake.inject("PATCH", hooks, 500, times=2, where=for_token(b, uploads_result))
    fake.inject("PATCH", hooks, 429, times=None, retry_after=0.2, where=for_token(c, uploads_result))
    carol = str(users[2].id)
    posts_carols_result = lambda r: carol in (r.json or {}).get("content", "") and uploads_result(r)  # noqa: E731
    channel = rf"^/channels/{fake.channel.id}/messages$"
    fake.inject("POST", channel, 429, times=1, retry_after=0.3, where=posts_carols_result)
    fake.inject("POST", channel, 500, times=1, where=posts_carols_result)
    fake.inject("PATCH", hooks, 429, times=None, retry_after=0.3, where=for_token(d, is_progress_edit))
    fake.inject("PATCH", hooks, 500, times=None, where=for_token(e, is_progress_edit))
    fake.inject("PATCH", hooks, None, times=None, delay=2.5, where=for_token(f, is_progress_edit))
    try:
        in_place = {h.token: await h.wait_for_original(has_image, timeout=120) for h in handles if h.token != c}
        posted = await fake.wait_for_message(
            lambda m: has_image(m) and "rest fault 2" in m["content"] and m.get("webhook_id") is None, timeout=120
        )
    finally:
        fake.clear_injections()
        # Nothing still on its way that could change a message after the checks below.
        await fake.wait_until(lambda: all(r.answered for r in fake.requests) or None, timeout=30)

    def attempts(token: str, kind: Kind) -> str:
        sent = requests_for(fake, token, kind)
        return f"{len(sent)} attempts ({', '.join(str(r.status) for r in sent)})"

    check(
        "REST",
        "429 (retry_after 0.5 s) ×2 on the result upload",
        "result still arrives, in place",
        f"{attempts(a, uploads_result)}; result in the original message",
        has_image(in_place[a]),
    )
    check(
        "REST",
        "500 ×2 on the result upload",
        "result still arrives, in place",
        f"{attempts(b, uploads_result)}; result in the original message",
        has_image(in_place[b]),
    )
    original_c = handles[2].original or {}
    posts = [r for r in fake.requests if re.match(channel, r.path) and posts_carols_result(r)]
    post_attempts = [r.status for r in posts]
    allowed = posts[-1].json["allowed_mentions"]
    check(
        "REST",
        "429 on every result upload to the message; then 429, 500 on the channel post",
        "result posted anew to the channel, pinging only its requester",
        f"edit: {attempts(c, uploads_result)}; channel post attempts {post_attempts}; "
        f"posted with allowed_mentions {allowed}",
        not has_image(original_c)
        and f"<@{carol}>" in posted["content"]
        and post_attempts[-1] == 200
        and allowed["parse"] == []
        and [str(u) for u in allowed["users"]] == [carol],
    )
    for token, case in (
        (d, "429 on every progress edit"),
        (e, "500 on every progress edit"),
        (f, "every progress edit answered after 2.5 s"),
    ):
        edits = requests_for(fake, token, is_progress_edit)
        statuses = sorted({r.status for r in edits})
        final = handles[[h.token for h in handles].index(token)].original
        check(
            "REST",
            case,
            "progress edits dropped, not piled up; result still arrives",
            f"40 steps → {len(edits)} edit requests {statuses}, at most {max_in_flight(edits)} in flight; "
            f"result in place{'' if has_image(final) else ' then overwritten'}",
            max_in_flight(edits) <= 1 and len(edits) <= 30 and has_image(final),
        )


async def test_progress_message_deleted_while_its_job_runs(rig: Rig) -> None:
    fake, (alice, bob, *_) = rig.fake, rig.users
    handle = await rig.imagine(alice, f"deleted while running @everyone <@{bob.id}>", steps=40)
    await fake.wait_for_request(lambda r: is_progress_edit(r) and handle.token in r.path and r.status == 200, 60)
    await fake.delete_message(fake.store.messages[handle.original_message_id])
    posted = await fake.wait_for_message(
        lambda m: has_image(m) and "deleted while running" in m["content"] and m.get("webhook_id") is None, 120
    )
    not_found = [r for r in fake.requests if handle.token in r.path and r.status == 404]
    post = next(r for r in fake.requests if isinstance(r.response, dict) and r.response.get("id") == posted["id"])
    allowed = post.json["allowed_mentions"]
    check(
        "REST",
        "progress message of a /imagine job deleted while it runs (404 Unknown Message); "
        "its prompt has @everyone and <@bob>",
        "no crash; result posted anew, pinging only the requester",
        f"{len(not_found)} edit(s) answered 404; result posted to the channel with allowed_mentions {allowed}; "
        "process alive",
        bool(not_found)
        and f"<@{alice.id}>" in posted["content"]
        and [str(u) for u in allowed["users"]] == [str(alice.id)]
        and allowed["parse"] == []
        and rig.bot.alive,
    )

    picture = await fake.post_user_message("a picture", attachments=[("pic.png", png(), "image/png")], user=alice)
    reply = await fake.post_user_message("paint it blue --steps 40", reply_to=int(picture["id"]), user=bob)
    ours = await fake.wait_for_message(replying_to(fake, reply), timeout=30)
    edits_ours = lambda r: is_progress_edit(r) and r.path.endswith(f"/messages/{ours['id']}")  # noqa: E731
    await fake.wait_for_request(lambda r: edits_ours(r) and r.status == 200, timeout=60)
    await fake.delete_message(fake.store.messages[int(ours["id"])])
    again = await fake.wait_for_message(
        lambda m: has_image(m) and "paint it blue" in m["content"] and m["id"] != ours["id"], timeout=120
    )
    not_found = [r for r in fake.requests if r.path.endswith(f"/messages/{ours['id']}") and r.status == 404]
    check(
        "REST",
        "our reply to a remix deleted while the job runs (404 Unknown Message)",
        "no crash; result posted anew",
        f"{len(not_found)} edit(s) answered 404; result posted to the channel; process alive",
        bool(not_found) and f"<@{bob.id}>" in again["content"] and rig.bot.alive,
    )


async def test_out_of_memory_splits_a_batch_and_answers_a_single_job(rig: Rig) -> None:
    fake, users = rig.fake, rig.users
    log_before = len(rig.bot.output())
    rig.set_gpu_faults(oom_above_rows=4)  # the GPU now holds 2 images (4 UNet rows with guidance) at a time
    try:
        blocker = await rig.imagine(users[5], "oom warm-up", steps=30)
        await fake.wait_for_request(lambda r: is_progress_edit(r) and blocker.token in r.path, timeout=60)
        singles = [await rig.imagine(user, f"oom single {i}", steps=4) for i, user in enumerate(users[:4])]
        big = await rig.imagine(users[4], "oom big", steps=5, count=3)
        done = [await h.wait_for_original(has_image, timeout=120) for h in singles]
        refused = await big.wait_for_original(lambda m: "⚠️" in m["content"], timeout=120)
        after = await (await rig.imagine(users[4], "after oom", steps=4)).wait_for_original(has_image, timeout=120)
    finally:
        rig.set_gpu_faults()
    splits = re.findall(r"out of memory on a batch of (\d+) jobs; splitting", rig.bot.output()[log_before:])
    check(
        "OOM",
        "out of memory on a batch (injected: more than 2 images per UNet call)",
        "batch split and retried; every job delivered",
        f"split batches of {', '.join(splits)} jobs; {len(done)}/4 delivered",
        bool(splits) and len(done) == 4,
    )
    error = refused["content"].split("⚠️", 1)[1].strip()
    check(
        "OOM",
        "out of memory on a single job (3 images)",
        "clear error to the user; the loop carries on",
        f"“{error}”; the next job delivered",
        "ran out of memory making 3 image(s) at 64x64" in error and has_image(after),
    )


async def test_uploaders_file_names_never_reach_the_disk(rig: Rig) -> None:
    fake, (alice, bob, *_) = rig.fake, rig.users
    marker = f"upload{secrets.token_hex(4)}"  # found nowhere unless a file name was used
    handle = await fake.send_slash_command(
        "imagine", {"prompt": "path name check"}, user=alice, attachments={"image": (f"../../{marker}.png", png())}
    )
    final = await handle.wait_for_original(has_image, timeout=120)
    picture = await fake.post_user_message("", attachments=[(f"..\\..\\{marker}.png", png(), "image/png")], user=bob)
    reply = await fake.post_user_message("path name remix", reply_to=int(picture["id"]), user=bob)
    remixed = await fake.wait_for_message(lambda m: replying_to(fake, reply)(m) and has_image(m), timeout=120)
    inputs = [
        row["init_path"] for row in query(rig.bot.db, "SELECT init_path FROM jobs WHERE prompt LIKE 'path name%'")
    ]
    stored = b"".join(p.read_bytes() for p in rig.bot.data.glob("imagine.sqlite3*"))
    strays = [p for p in rig.bot.config.parent.parent.rglob(f"*{marker}*")]
    names = [a["filename"] for m in (final, remixed) for a in m["attachments"]]
    check(
        "security",
        "attachments named ../../NAME.png and ..\\..\\NAME.png",
        "stored under our own names; no path traversal",
        f"stored as {', '.join(inputs)}; results sent as {', '.join(names)}; "
        f"{len(strays)} files named after the upload anywhere; name in the database: {marker.encode() in stored}",
        len(inputs) == 2
        and all(re.fullmatch(r"inputs/[0-9a-f]{2}/[0-9a-f]{64}\.png", p or "") for p in inputs)
        and not strays
        and marker.encode() not in stored,
    )


async def test_every_message_the_bot_sent_pings_at_most_its_requester(rig: Rig) -> None:
    writes = bot_writes(rig.fake, rig.job_owner)
    bad = violations(writes)
    pinging = [w for w in writes if w.notified]
    check(
        "security",
        f"every POST/PATCH with text the bot sent in these fault tests ({len(writes)})",
        "allowed_mentions on each; only the requester can be pinged; never @everyone or roles",
        f"{len(writes) - len(bad)}/{len(writes)} fine; {len(pinging)} ping their requester; "
        f"{len(bad)} violations {bad[:3]}",
        not bad and len(writes) > 20,
    )


async def test_the_token_never_reaches_the_logs_or_the_database(rig: Rig) -> None:
    status = await rig.bot.stop()
    log = rig.bot.output()
    stored = b"".join(p.read_bytes() for p in rig.bot.data.glob("imagine.sqlite3*"))
    check(
        "security",
        "bot token, after all the faults above (log at INFO, SQLite file)",
        "never written anywhere",
        f"{len(log.splitlines())} log lines, token in log: {rig.fake.token in log}; "
        f"in database: {rig.fake.token.encode() in stored}; exit status {status}",
        rig.fake.token not in log and rig.fake.token.encode() not in stored and status == 0,
    )
