"""The long-lived objects cogs use, built once by the composition root."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.config import Config
from generation.captioning import Captioner
from generation.catalog import Catalog
from jobs.queue import JobQueue
from jobs.worker import Worker
from storage.store import Store


@dataclass(frozen=True)
class Services:
    """Config, store, queue and the models users can pick, shared by every cog."""

    config: Config
    store: Store
    queue: JobQueue
    catalog: Catalog  # the one model lookup: refuses unknown and broken models, lists the choices
    has_safety_checker: Callable[[str], bool] | None = None  # the engine's, when it runs in this process
    # Short GPU work outside the queue (a caption for /describe) on the worker's GPU thread, between batches.
    run_on_gpu: Callable[..., Awaitable[Any]] | None = None
    captioner: Captioner | None = None  # /describe's model ([describe] model); None: /describe is not set up
    workers: tuple[Worker, ...] = ()  # the GPU workers, read by /imagine-admin show and the metrics

    def safety_checks(self, model: str) -> bool:
        """Whether a safety checker flags this model's images (from the engine, else from the config)."""
        if self.has_safety_checker is not None:
            return self.has_safety_checker(model)
        spec = self.config.model_map.get(model)
        return bool(spec and spec.safety_checker)
