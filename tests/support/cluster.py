"""One local Ray per test module for `[cluster] backend = "ray"` (ray.init costs seconds), on CPU actors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from generation.specs import ModelSpec
from jobs.cluster import RemoteEngine
from jobs.cluster_actor import ActorSettings

# Ray's own CPU count for scheduling: two actors of one CPU each, a replacement for a killed one, and room to spare.
RAY_CPUS = 6


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray without GPUs for a test module; the bot joins it instead of starting its own. Per module, not
    per session: an idle Ray's processes would take a slice of CI's two cores through every later test."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=RAY_CPUS, num_gpus=0, include_dashboard=False)
    yield
    if ray.is_initialized():
        ray.shutdown()


def tiny_models(sd: Path, sdxl: Path) -> dict[str, ModelSpec]:
    """The tiny SD and SDXL models, as the `engine` fixture serves them."""
    return {
        "tiny": ModelSpec(name="tiny", source=str(sd), steps=4, width=64, height=64),
        "tiny-xl": ModelSpec(name="tiny-xl", source=str(sdxl), kind="sdxl", steps=3, width=64, height=64),
    }


def cpu_actors(models: dict[str, ModelSpec], count: int = 2) -> list[RemoteEngine]:
    """`count` Ray workers on the CPU, each with one CPU (so one torch thread, as `one_torch_thread` here)."""
    settings = ActorSettings(models, device="cpu", preview_every=2)
    return [RemoteEngine(settings, name=f"gpu-{n}", num_gpus=0, num_cpus=1) for n in range(1, count + 1)]
