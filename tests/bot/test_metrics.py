"""`[metrics] port`: Prometheus metrics and /healthz over HTTP, scraped from a bot serving the loopback Discord,
parsed with prometheus_client's own parser and matched against what the test made happen."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path

import aiohttp
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import ConfigError, MetricsConfig, load_config
from bot.runner import StartupError, bot_parts
from generation.engine import Engine
from generation.specs import ModelSpec
from tests.bot.conftest import Running, has_image, make_config
from tests.fake_discord import FakeDiscord, running_client

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@asynccontextmanager
async def bot_with_metrics(fake: FakeDiscord, engine: Engine, model: Path, data: Path) -> AsyncIterator[Running]:
    config = replace(make_config(fake, model, data), metrics=MetricsConfig(port=free_port()))
    engine.models = config.model_map
    async with bot_parts(config, engine) as (bot, worker), running_client(bot, fake):
        await fake.wait_until(lambda: fake.registered_commands(fake.guild.id) or None)
        yield Running(fake, bot, worker, config)


async def scrape(running: Running) -> Samples:
    """Every sample of /metrics, by name and labels, as Prometheus would read it."""
    url = f"http://127.0.0.1:{running.config.metrics.port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def healthz(running: Running) -> tuple[int, str]:
    url = f"http://127.0.0.1:{running.config.metrics.port}/healthz"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@contextmanager
def broken_gpu(engine: Engine) -> Iterator[None]:
    """Every UNet call fails the way a GPU fault does (not out of memory): the job fails."""

    def fail(module, args):  # type: ignore[no-untyped-def]
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    hook = engine.load("tiny").core_module().register_forward_pre_hook(fail)
    try:
        yield
    finally:
        hook.remove()


async def imagine(fake: FakeDiscord, user, prompt: str, **options) -> dict:  # type: ignore[no-untyped-def]
    handle = await fake.send_slash_command("imagine", {"prompt": prompt, **options}, user=user)
    await handle.wait_for_callback()
    return await handle.wait_for_original(lambda m: has_image(m) or "⚠️" in m["content"], timeout=120)


async def test_metrics_match_the_jobs_made_and_healthz_tells_a_stopped_worker(
    fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path
) -> None:
    fake = fake_discord
    engine = Engine({"tiny": ModelSpec(name="tiny", source=str(tiny_sd_dir))}, device="cpu", preview_every=2)
    async with bot_with_metrics(fake, engine, tiny_sd_dir, tmp_path) as running:
        assert await healthz(running) == (200, "ok\n")
        # Three jobs one after another: GPU calls of 1, 2 and 1 images.
        for prompt, count, user in (("one", 1, fake.member), ("two", 2, fake.other_member), ("three", 1, fake.member)):
            assert has_image(await imagine(fake, user, prompt, count=count, seed=1))
        with broken_gpu(engine):
            failed = await imagine(fake, fake.other_member, "broken", seed=2)
        assert "Generation failed" in failed["content"]
        await running.worker.stop()  # the GPU goes away: what comes now waits
        for user in (fake.member, fake.other_member):
            await (await fake.send_slash_command("imagine", {"prompt": "waits"}, user=user)).wait_for_callback()

        samples = await scrape(running)
        status = await healthz(running)

    jobs = {s: value(samples, "imagine_jobs", status=s) for s in ("queued", "running", "done", "failed", "cancelled")}
    assert jobs == {"queued": 2, "running": 0, "done": 3, "failed": 1, "cancelled": 0}
    assert value(samples, "imagine_queue_jobs") == 2 and value(samples, "imagine_queue_depth") == 2
    assert value(samples, "imagine_queue_jobs_by_guild", guild=str(fake.guild.id)) == 2
    assert value(samples, "imagine_images_total") == 4
    assert value(samples, "imagine_batch_images_count") == 3 and value(samples, "imagine_batch_images_sum") == 4
    assert value(samples, "imagine_batch_images_bucket", le="1.0") == 2
    assert value(samples, "imagine_batch_images_bucket", le="2.0") == 3
    assert value(samples, "imagine_batch_images_bucket", le="+Inf") == 3
    for name in ("imagine_job_wait_seconds", "imagine_job_run_seconds"):  # the 3 done and the failed one
        assert value(samples, f"{name}_count") == 4 and value(samples, f"{name}_sum") >= 0
    assert value(samples, "imagine_job_run_seconds_sum") > 0
    worker = running.worker.name
    assert value(samples, "imagine_model_loads_total", worker=worker) == 1  # loaded once, at start
    assert value(samples, "imagine_worker_state", worker=worker, state="stopped") == 1
    assert value(samples, "imagine_worker_state", worker=worker, state="idle") == 0
    assert value(samples, "imagine_storage_full") == 0
    assert value(samples, "imagine_throughput_pixel_steps_per_second") > 0
    for name in ("retries", "failures", "undeliverable"):  # every result reached Discord the first time
        for kind in ("job", "training"):
            assert value(samples, f"imagine_delivery_{name}_total", kind=kind) == 0
    assert value(samples, "imagine_discord_connected") == 1
    assert not any(name.startswith("imagine_gpu_memory") for name, _ in samples)  # no CUDA here
    assert status == (503, "the GPU worker has stopped\n")
    # Each bot has its own registry: nothing reached the global one.
    assert not [m for m in prometheus_client.REGISTRY.collect() if m.name.startswith("imagine")]


async def test_healthz_fails_once_the_discord_client_is_closed(
    fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, bot_engine: Engine
) -> None:
    async with bot_with_metrics(fake_discord, bot_engine, tiny_sd_dir, tmp_path) as running:
        assert (await healthz(running))[0] == 200
        await running.bot.close()
        assert await healthz(running) == (503, "the Discord client is closed\n")


async def test_a_port_in_use_stops_the_start_naming_it(
    fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, bot_engine: Engine
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = replace(make_config(fake_discord, tiny_sd_dir, tmp_path), metrics=MetricsConfig(port=port))
        bot_engine.models = config.model_map
        with pytest.raises(StartupError) as refused:
            async with bot_parts(config, bot_engine):
                pass
    assert f"cannot serve metrics on 127.0.0.1:{port} ([metrics] host and port)" in str(refused.value)


def test_metrics_config_is_off_by_default_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("")
    assert load_config(path).metrics == MetricsConfig(port=0, host="127.0.0.1")
    path.write_text('[metrics]\nport = 9108\nhost = "0.0.0.0"\n')
    assert load_config(path).metrics == MetricsConfig(port=9108, host="0.0.0.0")
    path.write_text("[metrics]\nport = 70000\n")
    with pytest.raises(ConfigError, match=r"\[metrics\] port must be a whole number from 1 to 65535"):
        load_config(path)
