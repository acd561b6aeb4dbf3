"""One bot per database, tried as a new user would: a second `imagine-bot run` on the same SQLite file while the
first runs a job refuses to start and names the first; the first carries on and its job is made once; after the
first is SIGKILLed, the next one starts (the OS dropped the lock). `generate` and `history`: tests/test_cli_lock.py."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.bot.conftest import has_image
from tests.reliability.process import ROOT, BotProcess, poll, query, result_messages, write_config
from tests.reliability.table import check


async def imagine_bot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`imagine-bot ARGS` in its own process, until it exits by itself."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


async def test_a_second_bot_on_the_same_database_is_refused_and_the_first_job_is_made_once(
    fake_discord, tiny_sd_dir: Path, tmp_path: Path
) -> None:
    fake = fake_discord
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"seconds_per_step": 0.5}))  # the job runs until the test lets it finish
    config = write_config(tmp_path, fake, tiny_sd_dir)
    env = {"IMAGINE_GPU_FAULTS": str(faults)}
    first = BotProcess(config, fake, tmp_path / "first.log", module="tests.reliability.launch", env=env)
    await first.start()
    try:
        handle = await fake.send_slash_command("imagine", {"prompt": "made once", "seed": 1, "steps": 100})
        await handle.wait_for_callback(timeout=15)
        (running,) = await poll(
            lambda: query(first.db, "SELECT id FROM jobs WHERE status = 'running'"), timeout=60, what="a running job"
        )
        job_id = running["id"]
        second = await imagine_bot("run", "--config", str(config), env={"DISCORD_TOKEN": fake.token})
        alive_after = first.alive
        faults.write_text("{}")  # full speed: the first bot finishes the job
        final = await handle.wait_for_original(has_image, timeout=120)
        (job,) = await poll(  # recorded just after the message is sent
            lambda: query(first.db, "SELECT * FROM jobs WHERE id = ? AND delivered_at IS NOT NULL", (job_id,)),
            timeout=30,
            what="the delivery recorded",
        )
        shown = result_messages(fake).get(job_id, [])
    finally:
        first.kill()  # SIGKILL: no clean-up of any kind
    host = socket.gethostname()
    said = second.stderr.strip().splitlines()[-1] if second.stderr.strip() else ""
    refusal = f"imagine-bot: another imagine-bot (`imagine-bot run`, pid {first.process.pid} on {host}, since "
    third = await BotProcess(config, fake, tmp_path / "third.log").start()  # the lock went with the process
    exit_status = await third.stop()
    ok = (
        second.returncode == 1
        and said.startswith(refusal)
        and f"is running on the database {first.db} ([storage] path); stop it first" in said
        and "Traceback" not in second.stderr
        and alive_after
        and job["status"] == "done"
        and job["attempts"] == 1
        and len(shown) == 1
        and "made once" in final["content"]
        and exit_status == 0
    )
    check(
        "one bot per database",
        "a second `imagine-bot run` on the same SQLite file while the first runs a job",
        "refused with the first's pid, the first's job made and delivered once; after SIGKILL a new bot starts",
        f"second run exit {second.returncode}: {said!r}; first alive {alive_after}; "
        f"job {job['status']} after {job['attempts']} attempt(s), "
        f"{len(shown)} result message(s); after SIGKILL the next bot started and stopped with {exit_status}",
        bool(ok),
    )
