"""What FLUX and SD3 share: a flow-matching transformer behind one diffusers pipeline per mode.

Both VAEs downsample 8x and both transformers see 2x2 latent patches (FLUX packs them into tokens, SD3
patchifies), so sides must be multiples of 16; both read the prompt with CLIP (77 tokens, truncated) and
T5 (`max_sequence_length`, at most 512). The cost model and the previews live here too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import AutoencoderTiny, DiffusionPipeline
from PIL import Image

from generation.errors import InvalidRequest
from generation.families.adapters import AdapterCache
from generation.families.base import Family, StepReporter, generators, per_image, run_pipeline
from generation.families.loading import is_local_path, load_pretrained
from generation.loras import strip_lora_tags
from generation.preview import Previewer, TinyVaePreviewer
from generation.request import GenerationRequest, Mode
from generation.samplers import describe_scheduler, make_scheduler
from generation.specs import SINGLE_FILE_SUFFIXES, LoraSpec, ModelSpec

SIZE_MULTIPLE = 16  # VAE 8x times 2x2 patches
MAX_T5_TOKENS = 512  # diffusers refuses a longer max_sequence_length in both families
PIXELS_PER_TOKEN = SIZE_MULTIPLE**2
# DESIGN.md's compute anchor, the queue's unit: SD 1.5's UNet with CFG is about 1.68 TFLOP per 512² step.
SD15_FLOPS_PER_PIXEL_STEP = 1.68e12 / (512 * 512)

RgbFactors = tuple[tuple[float, float, float], ...]


def load_pipeline(
    cls: type[DiffusionPipeline], spec: ModelSpec, device: torch.device, dtype: torch.dtype
) -> DiffusionPipeline:
    """The text-to-image pipeline of a spec (diffusers directory, hub id or single file), on the device."""
    if spec.source.endswith(SINGLE_FILE_SUFFIXES):
        pipe = load_pretrained(spec, lambda path: cls.from_single_file(path, config=spec.config, dtype=dtype))
    else:
        variant = None if is_local_path(spec.source) else spec.variant
        pipe = load_pretrained(spec, lambda path: cls.from_pretrained(path, variant=variant, dtype=dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@dataclass(frozen=True)
class TransformerShape:
    """What one transformer pass costs depends on: how many blocks, how wide."""

    blocks: int
    width: int

    def flops(self, tokens: int) -> float:
        """FLOPs of one pass over `tokens` (image + text) tokens.

        Per block and token the attention projections and the 4x MLP are 12·d² multiply-adds (in FLUX's
        single blocks and in each stream of a joint block alike); attention adds 2·L²·d. Modulation and
        the text encoders (run once, not per step) are left out: a few percent.
        """
        return self.blocks * (24 * self.width**2 * tokens + 4 * self.width * tokens**2)


def relative_cost(request: GenerationRequest, shape: TransformerShape, text_tokens: int, passes: int) -> int:
    """The request's pixel-steps weighted by a transformer step's FLOPs over SD 1.5's at the same size."""
    pixels = request.width * request.height
    step = passes * shape.flops(pixels // PIXELS_PER_TOKEN + text_tokens)
    return max(1, round(request.cost * step / (SD15_FLOPS_PER_PIXEL_STEP * pixels)))


def transformer_config(spec: ModelSpec) -> Mapping[str, Any]:
    """The transformer's config.json from a local diffusers directory or the hub cache; {} when not at hand."""
    return _read_transformer_config(spec.source)


@lru_cache(maxsize=64)
def _read_transformer_config(source: str) -> Mapping[str, Any]:
    # Cached: the queue costs every request on the event loop, and a model's shape does not change.
    if source.endswith(SINGLE_FILE_SUFFIXES):
        return {}
    path: str | Path | None
    if is_local_path(source):
        path = Path(source).expanduser() / "transformer" / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        try:
            found = try_to_load_from_cache(source, "transformer/config.json")
        except ValueError:  # not a valid repo id
            found = None
        path = found if isinstance(found, str) else None  # None, or a marker that it is known to be absent
    try:
        return json.loads(Path(path).read_text()) if path else {}
    except (OSError, ValueError):
        return {}


def width_of(config: Mapping[str, Any], default: int) -> int:
    """A diffusers transformer's hidden width: heads times head size."""
    if "num_attention_heads" in config and "attention_head_dim" in config:
        return int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    return default


def _pictures(rgb: torch.Tensor) -> list[Image.Image]:
    # rgb: (batch, 3, h, w) in [-1, 1]
    array = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(np.ascontiguousarray(a.permute(1, 2, 0).cpu().numpy()), "RGB") for a in array]


class LatentRgbPreviewer:
    """16 latent channels to RGB by a fixed 16x3 map plus bias: almost free, blurry, enough to watch."""

    def __init__(self, factors: RgbFactors, bias: tuple[float, float, float], upscale: int = 4) -> None:
        self._factors = torch.tensor(factors)
        self._bias = torch.tensor(bias)
        self._upscale = upscale

    def __call__(self, latents: torch.Tensor) -> list[Image.Image]:
        """One preview per image, `upscale` times the latent size."""
        factors = self._factors.to(latents.device)
        rgb = torch.einsum("bchw,cr->brhw", latents.float(), factors) + self._bias.to(latents.device)[:, None, None]
        pictures = _pictures(rgb)
        return [p.resize((p.width * self._upscale, p.height * self._upscale)) for p in pictures]


def tiny_vae_previewer(vae: AutoencoderTiny) -> Previewer:
    """Sharp previews with a taef1/taesd3-style AutoencoderTiny, decoding as the pipelines decode."""
    inner = TinyVaePreviewer(vae)
    scaling, shift = vae.config.scaling_factor, vae.config.get("shift_factor", 0.0)
    # The pipelines decode `latents / scaling + shift`; TinyVaePreviewer divides by scaling only.
    return lambda latents: inner(latents + shift * scaling)


class FlowMatchFamily(Family):
    """A flow-matching transformer: txt2img resident, img2img and inpaint derived from it with from_pipe."""

    modes = frozenset(Mode)
    # Flow-matching models ship FlowMatchEulerDiscreteScheduler; A1111's samplers are for eps/v models.
    samplers = False
    # Aspect-ratio sizes and pictures are fitted to this (generation.options); a typed WxH that is not a
    # multiple is refused by Family.check, by name, rather than resized by diffusers behind the user's back.
    size_multiple: ClassVar[int] = SIZE_MULTIPLE
    pipelines: ClassVar[Mapping[Mode, type[DiffusionPipeline]]]
    rgb_factors: ClassVar[RgbFactors]
    rgb_bias: ClassVar[tuple[float, float, float]]

    def __init__(
        self, spec: ModelSpec, device: torch.device, dtype: torch.dtype, pipe: DiffusionPipeline | None = None
    ) -> None:
        super().__init__(spec, device, dtype)
        # `pipe`: an already-built pipeline (benchmarks build full-size random weights in memory).
        base = pipe if pipe is not None else load_pipeline(self.pipelines[Mode.TXT2IMG], spec, device, dtype)
        self._pipes: dict[Mode, DiffusionPipeline] = {Mode.TXT2IMG: base}
        self._scheduler = base.scheduler  # as shipped; each call gets a fresh copy
        self._previewer: Previewer | None = None
        self.adapters = AdapterCache(base)  # modes derived with from_pipe share its modules

    def use_loras(self, loras: Sequence[tuple[LoraSpec, float]]) -> None:
        """Activate exactly these LoRAs where the family takes them (`loras`); none: the base model exactly."""
        if not self.loras:
            super().use_loras(loras)
            return
        self.adapters.use(loras)

    @property
    def resident_loras(self) -> frozenset[str]:
        """The LoRAs loaded now."""
        return self.adapters.resident

    @classmethod
    def check(cls, spec: ModelSpec, request: GenerationRequest) -> None:
        """The common refusals (the 16-pixel size rule among them), then the T5 token limit."""
        super().check(spec, request)
        if spec.max_tokens is not None and not 1 <= spec.max_tokens <= MAX_T5_TOKENS:
            raise InvalidRequest(
                f"The model '{spec.name}' is set to read {spec.max_tokens} prompt tokens (max_tokens); "
                f"its T5 encoder reads 1 to {MAX_T5_TOKENS}."
            )

    def pipeline(self, mode: Mode) -> DiffusionPipeline:
        """The pipeline for a mode, sharing the resident weights."""
        if mode not in self._pipes:
            # Without dtype= from_pipe casts the shared modules to fp32, undoing fp16 for every mode.
            derived = self.pipelines[mode].from_pipe(self._pipes[Mode.TXT2IMG], dtype=self.dtype)
            derived.set_progress_bar_config(disable=True)
            self._pipes[mode] = derived
        return self._pipes[mode]

    def core_module(self) -> torch.nn.Module:
        """The transformer."""
        return self._pipes[Mode.TXT2IMG].transformer

    @property
    def max_sequence_length(self) -> int:
        """How many T5 tokens of the prompt the model reads: the config's max_tokens, else the family's."""
        return self.spec.max_tokens or self.default_max_tokens()

    def default_max_tokens(self) -> int:
        """The T5 prompt length when the config sets none (SD3 and FLUX.1-schnell: 256)."""
        return 256

    def run(self, requests: Sequence[GenerationRequest], report: StepReporter) -> tuple[list[Image.Image], str]:
        """One diffusers call for the whole batch."""
        first = requests[0]
        pipe = self.pipeline(first.mode)
        pipe.scheduler = make_scheduler(None, self._scheduler)
        previewer = self._preview() if report.preview_every else None
        preview = previewer and (lambda latents: previewer(self.spatial(latents, first.height, first.width)))
        return run_pipeline(pipe, self.arguments(requests), report, preview), describe_scheduler(pipe.scheduler)

    def arguments(self, requests: Sequence[GenerationRequest]) -> dict[str, object]:
        """The pipeline call's keywords for a batch (every mode takes height and width)."""
        first = requests[0]
        arguments: dict[str, object] = {
            # `<lora:…>` tags choose adapters (request.loras); they are not words for CLIP and T5 to read.
            "prompt": per_image(requests, lambda r: strip_lora_tags(r.prompt)),
            "generator": generators(requests),
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "num_images_per_prompt": 1,
            "height": first.height,
            "width": first.width,
            "max_sequence_length": self.max_sequence_length,
        } | self.negatives(requests)
        if first.mode is not Mode.TXT2IMG:
            arguments |= {"image": per_image(requests, lambda r: r.init_image), "strength": first.strength}
        if first.mode is Mode.INPAINT:
            arguments["mask_image"] = per_image(requests, lambda r: r.mask)
        return arguments

    def negatives(self, requests: Sequence[GenerationRequest]) -> dict[str, object]:
        """The negative-prompt keywords: per family."""
        raise NotImplementedError

    def spatial(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Latents as (batch, channels, h, w) for previews; SD3's already are."""
        return latents

    def _preview(self) -> Previewer:
        if self._previewer is None:
            if self.spec.preview_vae:
                vae = AutoencoderTiny.from_pretrained(self.spec.preview_vae, dtype=self.dtype).to(self.device)
                self._previewer = tiny_vae_previewer(vae)
            else:
                self._previewer = LatentRgbPreviewer(self.rgb_factors, self.rgb_bias)
        return self._previewer
