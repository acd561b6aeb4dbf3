"""The long-lived objects cogs use, built once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.config import Config
from generation.errors import InvalidRequest
from generation.queue import JobQueue
from generation.specs import ModelSpec
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

    def model(self, name: str | None) -> ModelSpec:
        """A configured model by name (the default when None), or a refusal listing the choices."""
        models = self.config.model_map
        name = name or self.config.generation.default_model
        if name not in models:
            raise InvalidRequest(f"There is no model called '{name}'. Choose one of: {', '.join(models)}.")
        return models[name]
