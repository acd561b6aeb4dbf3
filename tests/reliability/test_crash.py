"""`imagine-bot run` killed with SIGKILL mid-batch, then started again on the same SQLite file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.bot.conftest import has_image
from tests.reliability.mentions import bot_writes, violations
from tests.reliability.process import (
    BotProcess,
    add_members,
    integrity,
    poll,
    query,
    result_files,
    result_messages,
    write_config,
)
from tests.reliability.table import check


async def test_sigkill_mid_batch_then_restart_delivers_all_20_once(fake_discord, tiny_sd_dir: Path, tmp_path: Path):
    fake = fake_discord
    users = [fake.member, fake.other_member, *add_members(fake, ["carol", "dave", "erin"])]
    config = write_config(tmp_path, fake, tiny_sd_dir)
    first = await BotProcess(config, fake, tmp_path / "first.log").start()
    try:
        handles = []
        for i in range(20):
            options = {"prompt": f"crash job {i}", "seed": i, "steps": 20}
            handles.append(await fake.send_slash_command("imagine", options, user=users[i % 5]))
        for handle in handles:
            assert "Queued" in (await handle.wait_for_callback(timeout=15))["data"]["content"]

        def mid_batch() -> Counter | None:
            counts = Counter(row["status"] for row in query(first.db, "SELECT status FROM jobs"))
            return counts if counts["running"] and counts["done"] >= 2 else None

        await poll(mid_batch, timeout=120, what="a running batch after two finished jobs")
    finally:
        first.kill()
    at_kill = Counter(row["status"] for row in query(first.db, "SELECT status FROM jobs"))
    delivered_before = {row["id"] for row in query(first.db, "SELECT id FROM jobs WHERE delivered_at IS NOT NULL")}
    restarted_at = len(fake.requests)

    second = await BotProcess(config, fake, tmp_path / "second.log").start()
    try:
        for handle in handles:
            await handle.wait_for_original(has_image, timeout=180)
    finally:
        exit_status = await second.stop()

    jobs = query(second.db, "SELECT id, status, attempts, delivered_at FROM jobs")
    shown = result_messages(fake)
    resent = [job for r in fake.requests[restarted_at:] for job in result_files(r) if job in delivered_before]
    images = query(second.db, "SELECT path FROM images")
    on_disk = {p.relative_to(second.images).as_posix() for p in (second.images / "jobs").rglob("*.png")}
    status = integrity(second.db)
    ok = (
        len(jobs) == 20
        and all(job["status"] == "done" and job["delivered_at"] for job in jobs)
        and len(shown) == 20
        and all(len(messages) == 1 for messages in shown.values())
        and not resent
        and sum(job["attempts"] for job in jobs) == 20 + at_kill["running"]
        and on_disk == {row["path"] for row in images}
        and status == "ok"
        and exit_status == 0
    )
    check(
        "crash",
        "SIGKILL mid-batch with 20 jobs queued by 5 users, then start again",
        "all 20 delivered, none twice, PRAGMA integrity_check ok",
        f"killed at {at_kill['done']} done / {at_kill['running']} running / {at_kill['queued']} queued "
        f"({len(delivered_before)} delivered); after restart {sum(bool(j['delivered_at']) for j in jobs)}/20 "
        f"delivered, {sum(len(m) for m in shown.values())} result messages, {len(resent)} re-sent, "
        f"running jobs retried once, no orphan files, integrity_check {status}",
        ok,
    )
    assert at_kill["running"] >= 1
    for log in (first.output(), second.output()):
        assert fake.token not in log
    assert not violations(bot_writes(fake, lambda _: None))
