"""The engine: picks the family by the model's kind, keeps one model resident, runs batches through it."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from generation.catalog import family_for
from generation.device import resolve_device, resolve_dtype
from generation.errors import GenerationError, ModelUnavailable, OutOfMemory, UserFacingError
from generation.families.base import Family, StepReporter
from generation.metadata import parameters_text
from generation.request import GenerationRequest
from generation.results import GeneratedImage, StepProgress
from generation.safety import DiffusersSafetyChecker, SafetyChecker
from generation.specs import ModelSpec

log = logging.getLogger(__name__)

ProgressCallback = Callable[[StepProgress], None]
CancelCheck = Callable[[], bool]


class Engine:
    """Generates images on one device. Not thread-safe: call it from the single GPU thread."""

    def __init__(
        self,
        models: Mapping[str, ModelSpec],
        *,
        device: str = "auto",
        dtype: str = "auto",
        preview_every: int = 5,
        safety_checkers: Mapping[str, SafetyChecker] | None = None,
    ) -> None:
        self.models = dict(models)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.preview_every = preview_every
        self._checkers: dict[str, SafetyChecker] = dict(safety_checkers or {})
        self._resident: Family | None = None
        self.load_seconds: float | None = None  # how long the last model load took (the worker's affinity)

    def spec(self, name: str) -> ModelSpec:
        """The spec of a configured model, or a refusal listing the models there are."""
        try:
            return self.models[name]
        except KeyError:
            raise ModelUnavailable(f"Unknown model '{name}'. Choose one of: {', '.join(self.models)}.") from None

    @property
    def resident(self) -> str | None:
        """The name of the model now on the device, if any."""
        return self._resident.spec.name if self._resident else None

    def has_safety_checker(self, name: str) -> bool:
        """Whether images of this model are checked for NSFW content (flags are None when not)."""
        spec = self.models.get(name)
        return name in self._checkers or bool(spec and spec.safety_checker)

    def load(self, name: str) -> Family:
        """The loaded model, switching the resident one if needed (one model on the device at a time)."""
        spec = self.spec(name)
        if self._resident is not None and self._resident.spec == spec:
            return self._resident
        self.unload()
        log.info("loading model %s (%s) from %s on %s (%s)", spec.name, spec.kind, spec.source, self.device, self.dtype)
        started = time.perf_counter()
        self._resident = family_for(spec.kind)(spec, self.device, self.dtype)
        self.load_seconds = time.perf_counter() - started
        return self._resident

    def adopt(self, loaded: Family) -> None:
        """Make an already-built model resident (benchmarks serve in-memory weights this way)."""
        self.unload()
        self.models[loaded.spec.name] = loaded.spec
        self._resident = loaded

    def unload(self) -> None:
        """Drop the resident model and give its memory back to the device."""
        if self._resident is None:
            return
        log.info("unloading model %s", self._resident.spec.name)
        self._resident = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[list[GeneratedImage]]:
        """Run compatible requests as one batch; returns each request's images in order."""
        if not requests:
            return []
        first = requests[0]
        spec = self.spec(first.model)
        family = family_for(spec.kind)
        if any(family.batch_key(r) != family.batch_key(first) for r in requests):
            raise ValueError("requests in one batch must share model, mode, size, steps, guidance, sampler")
        count = sum(r.count for r in requests)
        try:
            for request in requests:
                family.check(spec, request)
            loaded = self.load(spec.name)
            images, sampler = loaded.run(requests, StepReporter(on_progress, should_cancel, self.preview_every))
            flags = self._safety_flags(spec, images)
        except torch.OutOfMemoryError as exc:
            raise OutOfMemory(
                f"The GPU ran out of memory making {count} image(s) at {first.width}x{first.height}. "
                "Try fewer images or a smaller size."
            ) from exc
        except UserFacingError:
            raise
        except Exception as exc:
            log.exception("generation failed for %d request(s) on %s", len(requests), spec.name)
            raise GenerationError(
                f"Generation failed ({type(exc).__name__}); it has been logged. Try again or change the settings."
            ) from exc
        return self._split(requests, images, flags, sampler, spec)

    def _safety_flags(self, spec: ModelSpec, images: list) -> list[bool | None]:
        checker = self._checkers.get(spec.name)
        if checker is None and spec.safety_checker:
            checker = DiffusersSafetyChecker(spec.safety_checker, self.device, self.dtype)
            self._checkers[spec.name] = checker
        if checker is None:
            return [None] * len(images)
        return list(checker(images))

    @staticmethod
    def _split(
        requests: Sequence[GenerationRequest],
        images: list,
        flags: list[bool | None],
        sampler: str,
        spec: ModelSpec,
    ) -> list[list[GeneratedImage]]:
        results, position = [], 0
        for request in requests:
            own = []
            for index, seed in enumerate(request.seeds):
                own.append(
                    GeneratedImage(
                        image=images[position],
                        seed=seed,
                        index=index,
                        parameters=parameters_text(request, seed, sampler, spec.name, images[position].size),
                        nsfw=flags[position],
                    )
                )
                position += 1
            results.append(own)
        return results
