"""The long-lived objects cogs use, built once by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.config import Config
from generation.errors import InvalidRequest
from generation.specs import ModelSpec
from jobs.queue import JobQueue
from storage.store import Store

if TYPE_CHECKING:
    from bot.delivery import Delivery


@dataclass
class Services:
    """Config, store, queue and delivery, shared by every cog."""

    config: Config
    store: Store
    queue: JobQueue
    delivery: Delivery | None = field(default=None)
    has_safety_checker: Callable[[str], bool] | None = None  # the engine's, when it runs in this process

    def model(self, name: str | None) -> ModelSpec:
        """A configured model by name (the default when None), or a refusal listing the choices."""
        models = self.config.model_map
        name = name or self.config.generation.default_model
        if name not in models:
            raise InvalidRequest(f"There is no model called '{name}'. Choose one of: {', '.join(models)}.")
        return models[name]

    def safety_checks(self, model: str) -> bool:
        """Whether a safety checker flags this model's images (from the engine, else from the config)."""
        if self.has_safety_checker is not None:
            return self.has_safety_checker(model)
        spec = self.config.model_map.get(model)
        return bool(spec and spec.safety_checker)
