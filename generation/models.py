"""Model specs from config, and the cache that keeps one pipeline resident on the device."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

from generation.errors import ModelUnavailable
from generation.request import Mode
from generation.specs import SINGLE_FILE_SUFFIXES, ModelSpec

log = logging.getLogger(__name__)


_AUTO_PIPELINES = {
    Mode.TXT2IMG: AutoPipelineForText2Image,
    Mode.IMG2IMG: AutoPipelineForImage2Image,
    Mode.INPAINT: AutoPipelineForInpainting,
}


def _is_local_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or Path(source).exists() or source.endswith(SINGLE_FILE_SUFFIXES)


def _unavailable(spec: ModelSpec, reason: str) -> ModelUnavailable:
    return ModelUnavailable(
        f"Model '{spec.name}' could not be loaded from '{spec.source}': {reason}. "
        "Download it on a machine with internet access (e.g. `hf download <id> --local-dir DIR`) and set "
        '`source = "DIR"` for this model in the config, or write a small test model with '
        "`imagine-bot tiny-model DIR`."
    )


def load_pipeline(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    """Load a text-to-image pipeline for a spec, on the device, without a built-in safety checker."""
    kwargs: dict[str, object] = {"dtype": dtype}
    if spec.kind == "sd":
        # We run the checker ourselves so a blocked image can still be spoilered if policy says so.
        kwargs |= {"safety_checker": None, "requires_safety_checker": False}
    source = spec.source
    try:
        if source.endswith(SINGLE_FILE_SUFFIXES):
            if not Path(source).expanduser().is_file():
                raise _unavailable(spec, "no such file")
            cls = StableDiffusionXLPipeline if spec.kind == "sdxl" else StableDiffusionPipeline
            pipe = cls.from_single_file(str(Path(source).expanduser()), config=spec.config, **kwargs)
        elif _is_local_path(source):
            path = Path(source).expanduser()
            if not (path / "model_index.json").is_file():
                raise _unavailable(spec, "it is not a diffusers directory (no model_index.json)")
            pipe = AutoPipelineForText2Image.from_pretrained(path, **kwargs)
        else:
            pipe = AutoPipelineForText2Image.from_pretrained(source, variant=spec.variant, **kwargs)
    except ModelUnavailable:
        raise
    except (OSError, ValueError) as exc:
        # Offline, a hub id that is not cached ends here (LocalEntryNotFoundError is an OSError).
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _unavailable(spec, f"it is not a local directory and could not be downloaded ({first_line})") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class PipelineCache:
    """Keeps one model resident; derives img2img/inpaint pipelines from it sharing its weights."""

    def __init__(self, device: torch.device, dtype: torch.dtype, loader=load_pipeline) -> None:
        self.device = device
        self.dtype = dtype
        self._loader = loader
        self._spec: ModelSpec | None = None
        self._pipes: dict[Mode, DiffusionPipeline] = {}

    @property
    def resident(self) -> str | None:
        """The name of the model now on the device, if any."""
        return self._spec.name if self._spec else None

    def get(self, spec: ModelSpec, mode: Mode) -> DiffusionPipeline:
        """The pipeline for a model and mode, loading or switching models as needed."""
        if self._spec != spec:
            self.unload()
            log.info("loading model %s from %s on %s (%s)", spec.name, spec.source, self.device, self.dtype)
            self._pipes[Mode.TXT2IMG] = self._loader(spec, self.device, self.dtype)
            self._spec = spec
        if mode not in self._pipes:
            base = self._pipes[Mode.TXT2IMG]
            # Without dtype= from_pipe casts the shared modules to fp32, undoing fp16 for every mode.
            derived = _AUTO_PIPELINES[mode].from_pipe(base, dtype=self.dtype)
            derived.set_progress_bar_config(disable=True)
            self._pipes[mode] = derived
        return self._pipes[mode]

    def unload(self) -> None:
        """Drop the resident model and give its memory back to the device."""
        if self._spec is None:
            return
        log.info("unloading model %s", self._spec.name)
        self._pipes.clear()
        self._spec = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
