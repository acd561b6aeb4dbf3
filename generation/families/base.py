"""The interface every model family implements, and the per-step reporting they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from PIL import Image

from generation.errors import Cancelled, InvalidRequest
from generation.request import GenerationRequest, Mode
from generation.results import StepProgress
from generation.specs import LoraSpec, ModelSpec

ProgressCallback = Callable[[StepProgress], None]
CancelCheck = Callable[[], bool]


class StepReporter:
    """Per-step progress, previews every `preview_every` steps, and the cancel check, for one batch."""

    def __init__(
        self, on_progress: ProgressCallback | None, should_cancel: CancelCheck | None, preview_every: int
    ) -> None:
        self._on_progress = on_progress
        self._should_cancel = should_cancel
        self.preview_every = preview_every if on_progress is not None else 0

    @property
    def cancelled(self) -> bool:
        """Whether the requester (or a stopping worker) asked to stop."""
        return self._should_cancel is not None and self._should_cancel()

    def wants_preview(self, step: int, total: int) -> bool:
        """Previews cost a decode: only every `preview_every` steps, never on the last."""
        return self.preview_every > 0 and step % self.preview_every == 0 and step < total

    def step(self, step: int, total: int, previews: Callable[[], Sequence[Image.Image]] | None = None) -> None:
        """Report `step` of `total`; `previews` is called only when a preview is due."""
        if self._on_progress is None:
            return
        shown = tuple(previews()) if previews is not None and self.wants_preview(step, total) else None
        self._on_progress(StepProgress(step=step, total=total, previews=shown))


class Family(ABC):
    """A kind of model: what it can do, how it is loaded, and one call that runs a batch.

    The class describes the family (no weights needed: the bot uses it to refuse and to cost requests);
    an instance is one loaded, resident model. Defaults per kind are in generation.specs.KIND_DEFAULTS, so
    reading the config needs no torch. Not thread-safe: run it from the single GPU thread.
    """

    kinds: ClassVar[tuple[str, ...]]
    modes: ClassVar[frozenset[Mode]]
    # Whether a negative prompt means something to the model; when not, one given is refused, never dropped.
    negative_prompt: ClassVar[bool] = True
    samplers: ClassVar[bool] = True  # whether A1111 sampler names apply
    size_multiple: ClassVar[int] = 8  # sides must be multiples of this (the VAE's downsampling, patches)
    loras: ClassVar[bool] = False  # whether LoRAs of this kind load (Catalog.check refuses them otherwise)

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        self.spec = spec
        self.device = device
        self.dtype = dtype

    @classmethod
    def check(cls, spec: ModelSpec, request: GenerationRequest) -> None:
        """Refuse, before anything is stored, what this model cannot do."""
        if request.mode not in cls.modes:
            can = ", ".join(m.value for m in Mode if m in cls.modes)
            raise InvalidRequest(f"The model '{spec.name}' cannot do {request.mode.value}; it can do: {can}.")
        if request.negative_prompt and not cls.negative_prompt:
            raise InvalidRequest(
                f"The model '{spec.name}' cannot use a negative prompt; leave it out or pick another model."
            )
        if request.negative_prompt and not cls.uses_negative(request):
            raise InvalidRequest(
                f"A negative prompt needs guidance above 1, and this request has {request.guidance:g} "
                f"(the model '{spec.name}' would ignore it): raise the guidance or leave the negative prompt out."
            )
        if request.width % cls.size_multiple or request.height % cls.size_multiple:
            raise InvalidRequest(
                f"The model '{spec.name}' needs a width and height that are multiples of {cls.size_multiple}, "
                f"not {request.width}x{request.height}."
            )
        if request.sampler and not cls.samplers:
            raise InvalidRequest(f"The model '{spec.name}' has its own sampler; leave the sampler out.")

    @classmethod
    def uses_negative(cls, request: GenerationRequest) -> bool:
        """Whether this request's negative prompt would change the picture (CFG runs only above guidance 1)."""
        return cls.negative_prompt and request.guidance > 1.0

    @classmethod
    def batch_key(cls, request: GenerationRequest) -> tuple[Any, ...]:
        """Requests with equal keys can share one call."""
        return request.batch_key

    @classmethod
    def cost(cls, spec: ModelSpec, request: GenerationRequest) -> int:
        """GPU work in the queue's unit (pixel-steps of SD 1.5); the queue's fairness and ETAs use it."""
        return request.cost

    def use_loras(self, loras: Sequence[tuple[LoraSpec, float]]) -> None:
        """Make exactly these adapters (and weights) active for the next run; none: the base model exactly."""
        if loras:
            raise InvalidRequest(f"The model '{self.spec.name}' ({self.spec.kind}) cannot use LoRAs; leave them out.")

    @property
    def resident_loras(self) -> frozenset[str]:
        """Names of the LoRAs loaded now: switching among them costs no load (the worker's affinity)."""
        return frozenset()

    @abstractmethod
    def run(self, requests: Sequence[GenerationRequest], report: StepReporter) -> tuple[list[Image.Image], str]:
        """Every image of the batch in request order, and the sampler's name for the metadata.

        Raises Cancelled when `report.cancelled` became true during the call.
        """

    def core_module(self) -> torch.nn.Module:
        """The module that does the denoising (tests and benchmarks hook it)."""
        raise NotImplementedError


def run_pipeline(
    pipe: Any,
    arguments: dict[str, object],
    report: StepReporter,
    preview: Callable[[torch.Tensor], Sequence[Image.Image]] | None,
) -> list[Image.Image]:
    """One diffusers call with per-step progress, previews of the latents, and cancel at the next step."""

    def on_step_end(pipe: Any, index: int, timestep: Any, tensors: dict) -> dict:
        if report.cancelled:
            pipe._interrupt = True  # diffusers skips the remaining steps (the VAE decode still runs)
        report.step(index + 1, pipe.num_timesteps, preview and (lambda: preview(tensors["latents"])))
        return tensors

    output = pipe(**arguments, callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
    if report.cancelled:
        raise Cancelled("Cancelled.")
    return list(output.images)


def generators(requests: Sequence[GenerationRequest]) -> list[torch.Generator]:
    """A CPU generator per image: the same seed gives the same picture on any device and in any batch."""
    return [torch.Generator("cpu").manual_seed(seed) for request in requests for seed in request.seeds]


def per_image(requests: Sequence[GenerationRequest], value: Callable[[GenerationRequest], Any]) -> list[Any]:
    """One value per image, in batch order (diffusers' own num_images_per_prompt pairs inputs wrongly)."""
    return [value(request) for request in requests for _ in request.seeds]
