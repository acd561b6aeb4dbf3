"""`[cluster] backend = "ray"` through the real bot against the loopback Discord: two local CPU actors.

The bot joins the module's Ray (tests/support/cluster.py) instead of starting one, and builds its actors
from the config, as `imagine-bot run` does. Start-up problems are tried as a new user would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bot.config import ClusterConfig, Config
from bot.runner import StartupError, bot_parts
from jobs.cluster import RemoteEngine
from jobs.queue import TRAINING_NEEDS_LOCAL
from storage.records import JobStatus
from tests.bot.conftest import button, has_image, make_config, png
from tests.fake_discord import FakeDiscord, running_client
from tests.reliability.process import ROOT, write_config
from tests.support.cluster import ray_cluster  # noqa: F401  (a fixture)

EPHEMERAL = 64


@pytest.fixture
def ray_config(fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path) -> Config:
    config = make_config(fake_discord, tiny_sd_dir, tmp_path)
    return dataclasses.replace(config, cluster=ClusterConfig(backend="ray", workers=2, num_gpus=0, num_cpus=1))


def job_of(message: dict) -> int:
    return int(button(message, "imagine:info").split(":")[2])


async def test_imagine_from_several_users_is_delivered_once_each_by_two_ray_workers(
    ray_cluster: None,  # noqa: F811
    ray_config: Config,
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    async with bot_parts(ray_config) as (bot, _worker), running_client(bot, fake):
        await fake.wait_until(lambda: fake.registered_commands(fake.guild.id) or None)
        workers = bot.services.workers
        assert [type(worker.engine) for worker in workers] == [RemoteEngine, RemoteEngine]
        users = [fake.member, fake.other_member, fake.owner, fake.moderator]
        handles = await asyncio.gather(
            *(
                fake.send_slash_command("imagine", {"prompt": f"a cat, take {n}", "steps": 30}, user=users[n % 4])
                for n in range(8)
            )
        )
        results = [await handle.wait_for_original(has_image, timeout=120) for handle in handles]
        jobs = [job_of(result) for result in results]
        assert len(set(jobs)) == 8
        store = bot.services.store
        async with asyncio.timeout(30):
            while None in [(await store.get_job(job_id)).delivered_at for job_id in jobs]:
                await asyncio.sleep(0.02)
        for job_id in jobs:
            job = await store.get_job(job_id)
            assert job.status is JobStatus.DONE and job.attempts == 1
        posted = Counter(job_of(m) for m in fake.messages() if has_image(m))
        assert posted == Counter(jobs)  # one result each, none twice
        assert all(sum(worker.batch_images.values()) > 0 for worker in workers)  # both actors made images

        photos = {f"photo{i}": (f"me-{i}.png", png(), "image/png") for i in range(1, 4)}
        handle = await fake.send_slash_command(
            "train", {"name": "Me", "trigger": "sks", "subject": "person"}, attachments=photos
        )
        refused = (await handle.wait_for_callback())["data"]
        assert refused["flags"] & EPHEMERAL and refused["content"] == f"⚠️ {TRAINING_NEEDS_LOCAL}"
        assert await store.active_trainings(fake.member.id) == []  # refused before anything was stored


async def test_without_ray_installed_the_start_says_how_to_install_it(
    ray_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where the extra is not installed
    with pytest.raises(StartupError) as refused:
        async with bot_parts(ray_config):
            pass
    assert str(refused.value) == (
        "[cluster] backend = \"ray\" needs Ray, which is not installed: pip install 'imagine-bot[cluster]'"
    )


async def test_a_cluster_without_the_gpus_one_worker_needs_ends_the_start(
    ray_cluster: None,  # noqa: F811
    ray_config: Config,
) -> None:
    gpu_workers = dataclasses.replace(ray_config.cluster, num_gpus=1.0)  # the session's Ray has no GPU
    with pytest.raises(StartupError) as refused:
        async with bot_parts(dataclasses.replace(ray_config, cluster=gpu_workers)):
            pass
    assert str(refused.value) == (
        "the Ray cluster has 0 GPU(s) in all, and each GPU worker asks for 1 ([cluster] num_gpus); add machines "
        "with GPUs (`ray status` lists them), or lower num_gpus"
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_ray_address_where_nothing_answers_ends_the_start_in_one_line(
    fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path
) -> None:
    port = closed_port()
    config = write_config(tmp_path, fake_discord, tiny_sd_dir)
    with config.open("a") as text:
        text.write(f'\n[cluster]\nbackend = "ray"\naddress = "127.0.0.1:{port}"\nworkers = 2\nnum_gpus = 0\n')
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot", "run", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "DISCORD_TOKEN": fake_discord.token, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert lines[-1] == (
        f"imagine-bot: cannot reach the Ray cluster at '127.0.0.1:{port}' ([cluster] address): nothing answers at "
        f"127.0.0.1:{port} (Connection refused). Start its head there (`ray start --head`), or fix the address."
    ), result.stderr
