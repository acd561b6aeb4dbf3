"""The engine: runs a batch of compatible requests through one diffusers call."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import torch
from diffusers import AutoencoderTiny
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from generation.device import resolve_device, resolve_dtype
from generation.errors import Cancelled, GenerationError, ModelUnavailable, OutOfMemory, UserFacingError
from generation.metadata import parameters_text
from generation.models import PipelineCache
from generation.preview import LinearPreviewer, Previewer, TinyVaePreviewer
from generation.request import GenerationRequest, Mode
from generation.results import GeneratedImage, StepProgress
from generation.safety import DiffusersSafetyChecker, SafetyChecker
from generation.samplers import describe_scheduler, make_scheduler
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
        self.cache = PipelineCache(self.device, self.dtype)
        self._checkers: dict[str, SafetyChecker] = dict(safety_checkers or {})
        self._previewers: dict[str, Previewer] = {}
        self._model_schedulers: dict[str, SchedulerMixin] = {}

    def spec(self, name: str) -> ModelSpec:
        """The spec of a configured model, or a refusal listing the models there are."""
        try:
            return self.models[name]
        except KeyError:
            raise ModelUnavailable(f"Unknown model '{name}'. Choose one of: {', '.join(self.models)}.") from None

    def has_safety_checker(self, name: str) -> bool:
        """Whether images of this model are checked for NSFW content (flags are None when not)."""
        spec = self.models.get(name)
        return name in self._checkers or bool(spec and spec.safety_checker)

    def load(self, name: str) -> None:
        """Make a model resident now, so the first request does not pay for loading."""
        self.cache.get(self.spec(name), Mode.TXT2IMG)

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
        if any(r.batch_key != first.batch_key for r in requests):
            raise ValueError("requests in one batch must share model, mode, size, steps, guidance, sampler")
        spec = self.spec(first.model)
        count = sum(r.count for r in requests)
        try:
            pipe = self.cache.get(spec, first.mode)
            if spec.name not in self._model_schedulers:
                # The scheduler the model shipped with; calls get fresh copies (or named samplers).
                self._model_schedulers = {spec.name: pipe.scheduler}
            pipe.scheduler = make_scheduler(first.sampler, self._model_schedulers[spec.name])
            sampler = first.sampler or describe_scheduler(pipe.scheduler)
            callback = self._step_callback(spec, on_progress, should_cancel)
            output = pipe(
                **self._call_arguments(requests),
                callback_on_step_end=callback,
                callback_on_step_end_tensor_inputs=["latents"],
            )
            if should_cancel is not None and should_cancel():
                raise Cancelled("Cancelled.")
            images = list(output.images)
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

    def _call_arguments(self, requests: Sequence[GenerationRequest]) -> dict[str, object]:
        first = requests[0]
        prompts, negatives, generators, inits, masks = [], [], [], [], []
        for request in requests:
            for seed in request.seeds:
                prompts.append(request.prompt)
                negatives.append(request.negative_prompt)
                # A CPU generator per image: the same seed gives the same picture on any device and in
                # any batch. Expanding images ourselves avoids diffusers' [a,a,b,b] x [A,B,A,B] pairing.
                generators.append(torch.Generator("cpu").manual_seed(seed))
                inits.append(request.init_image)
                masks.append(request.mask)
        arguments: dict[str, object] = {
            "prompt": prompts,
            "negative_prompt": negatives,
            "generator": generators,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "num_images_per_prompt": 1,
        }
        if first.mode is Mode.TXT2IMG:
            arguments |= {"height": first.height, "width": first.width}
        else:
            arguments |= {"image": inits, "strength": first.strength}
        if first.mode is Mode.INPAINT:
            arguments |= {"mask_image": masks, "height": first.height, "width": first.width}
        return arguments

    def _step_callback(
        self, spec: ModelSpec, on_progress: ProgressCallback | None, should_cancel: CancelCheck | None
    ) -> Callable[..., dict]:
        previewer = self._previewer(spec) if on_progress and self.preview_every > 0 else None

        def on_step_end(pipe, index: int, timestep, tensors: dict) -> dict:
            if should_cancel is not None and should_cancel():
                pipe._interrupt = True  # diffusers skips the remaining steps
            if on_progress is not None:
                step, total = index + 1, pipe.num_timesteps
                previews = None
                if previewer is not None and step % self.preview_every == 0 and step < total:
                    previews = tuple(previewer(tensors["latents"]))
                on_progress(StepProgress(step=step, total=total, previews=previews))
            return tensors

        return on_step_end

    def _previewer(self, spec: ModelSpec) -> Previewer:
        if spec.name not in self._previewers:
            if spec.preview_vae:
                vae = AutoencoderTiny.from_pretrained(spec.preview_vae, dtype=self.dtype).to(self.device)
                self._previewers[spec.name] = TinyVaePreviewer(vae)
            else:
                self._previewers[spec.name] = LinearPreviewer(spec.kind)
        return self._previewers[spec.name]

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
                        parameters=parameters_text(request, seed, sampler, spec.name),
                        nsfw=flags[position],
                    )
                )
                position += 1
            results.append(own)
        return results
