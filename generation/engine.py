"""The engine: picks the family by the model's kind, keeps one model resident, runs batches through it."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from generation.catalog import family_for
from generation.device import resolve_device, resolve_dtype
from generation.errors import GenerationError, InvalidRequest, ModelUnavailable, OutOfMemory, UserFacingError
from generation.families.base import Family, StepReporter
from generation.loras import a1111_short_hash, weights_file
from generation.metadata import parameters_text
from generation.outpaint import keep_unmasked
from generation.request import GenerationRequest, Mode
from generation.results import GeneratedImage, StepProgress
from generation.safety import DiffusersSafetyChecker, SafetyChecker
from generation.specs import LoraSpec, ModelSpec
from generation.training_inputs import TRAINABLE_KINDS
from generation.translation import Translation, Translator, reads_english

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

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
        loras: Mapping[str, LoraSpec] | None = None,
        translator: Translator | None = None,
    ) -> None:
        self.models = dict(models)
        self.translator = translator  # prompts in other languages to English, for models that read English
        # LoRAs by the name requests use; sources stay here, never in requests (they are not user data).
        # Kept as given, not copied: the bot's catalog adds the LoRAs members train while it runs.
        self.loras: Mapping[str, LoraSpec] = loras if loras is not None else {}
        self._hashes: dict[tuple[str, int, int], str] = {}  # (file, size, mtime) → A1111 short hash
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.preview_every = preview_every
        self._checkers: dict[str, SafetyChecker] = dict(safety_checkers or {})
        self._resident: Family | None = None
        self.load_seconds: float | None = None  # how long the last model load took (the worker's affinity)
        self.loads = 0  # models loaded so far (metrics: reloads are the cost model affinity avoids)

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

    @property
    def resident_loras(self) -> frozenset[str]:
        """Names of the LoRAs loaded into the resident model (switching among them costs no load)."""
        return self._resident.resident_loras if self._resident else frozenset()

    def lora(self, name: str) -> LoraSpec:
        """A LoRA by name, or a refusal naming it."""
        try:
            return self.loras[name]
        except KeyError:
            raise ModelUnavailable(f"There is no LoRA called '{name}' on this GPU worker.") from None

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
        self.loads += 1
        return self._resident

    def training_pipeline(self, name: str) -> DiffusionPipeline:
        """The resident pipeline of a model a LoRA can be trained on, loading it if needed."""
        spec = self.spec(name)
        if spec.kind not in TRAINABLE_KINDS:
            raise InvalidRequest(
                f"LoRA training works on {' and '.join(TRAINABLE_KINDS)} models; '{spec.name}' is {spec.kind}."
            )
        return self.load(name).pipeline(Mode.TXT2IMG)  # type: ignore[attr-defined]  # the SD family's

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
            loras = [(self.lora(name), weight) for name, weight in first.loras]
            for lora, _ in loras:
                if lora.kind != spec.kind:  # the catalog refuses this at the door; a wrong file would load half
                    raise InvalidRequest(f"The LoRA '{lora.name}' is for {lora.kind} models, not {spec.kind}.")
            loaded = self.load(spec.name)
            loaded.use_loras(loras)
            translations = self._translations(spec, requests)
            requests = [t.apply(r) if t else r for r, t in zip(requests, translations, strict=True)]
            images, sampler = loaded.run(requests, StepReporter(on_progress, should_cancel, self.preview_every))
            images = _kept_unmasked(requests, images)
            flags = self._safety_flags(spec, images)
            hashes = self._lora_hashes([lora for lora, _ in loras])
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
        return self._split(requests, images, flags, sampler, spec, hashes, translations)

    def _translations(self, spec: ModelSpec, requests: Sequence[GenerationRequest]) -> list[Translation | None]:
        if self.translator is None or not reads_english(spec):
            return [None] * len(requests)
        return self.translator.translate(requests)

    def _safety_flags(self, spec: ModelSpec, images: list) -> list[bool | None]:
        checker = self._checkers.get(spec.name)
        if checker is None and spec.safety_checker:
            checker = DiffusersSafetyChecker(spec.safety_checker, self.device, self.dtype)
            self._checkers[spec.name] = checker
        if checker is None:
            return [None] * len(images)
        return list(checker(images))

    def _lora_hashes(self, loras: Sequence[LoraSpec]) -> dict[str, str]:
        """A1111's short hash of each LoRA whose file is on this machine (others are left out of the PNG)."""
        hashes = {}
        for lora in loras:
            path = weights_file(lora)
            if path is None:
                continue
            stat = path.stat()
            key = (str(path), stat.st_size, stat.st_mtime_ns)  # a file trained again gets a new hash
            if key not in self._hashes:
                self._hashes[key] = a1111_short_hash(path)
            hashes[lora.name] = self._hashes[key]
        return hashes

    @staticmethod
    def _split(
        requests: Sequence[GenerationRequest],
        images: list,
        flags: list[bool | None],
        sampler: str,
        spec: ModelSpec,
        lora_hashes: Mapping[str, str],
        translations: Sequence[Translation | None],
    ) -> list[list[GeneratedImage]]:
        results, position = [], 0
        for request, translation in zip(requests, translations, strict=True):
            own = []
            for index, seed in enumerate(request.seeds):
                own.append(
                    GeneratedImage(
                        image=images[position],
                        seed=seed,
                        index=index,
                        parameters=parameters_text(
                            request, seed, sampler, spec.name, images[position].size, lora_hashes, translation
                        ),
                        nsfw=flags[position],
                        translation=translation,
                    )
                )
                position += 1
            results.append(own)
        return results


def _kept_unmasked(requests: Sequence[GenerationRequest], images: list) -> list:
    """Each image of a `keep_unmasked` inpainting request with its picture's own pixels outside the mask."""
    if not any(request.keep_unmasked for request in requests):
        return images
    kept, position = list(images), 0
    for request in requests:
        for _ in range(request.count):
            if request.keep_unmasked and request.init_image is not None and request.mask is not None:
                kept[position] = keep_unmasked(kept[position], request.init_image, request.mask)
            position += 1
    return kept
