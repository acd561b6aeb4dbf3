"""DeepFloyd IF: a pixel-space cascade, T5 text → 64 px (stage I) → 4x (stage II) → 4x again (stage III, optional).

Sizes: a request's width x height is stage I's size (KIND_DEFAULTS["if"] is 64x64, what IF-I was trained at);
the images returned are 4x that, 16x with `stages = 3`. An init image and mask arrive at the request's size:
stage I takes them as they are and stage II takes them upscaled 4x (bicubic, then the mask thresholded), which
is exactly what diffusers' own resizing does for a 64 px picture. We hand diffusers tensors, not PIL images,
because with PIL it resizes inputs to the UNet's `sample_size` and the output would ignore the request's size.

Per stage: every stage runs `request.steps` (img2img/inpaint: stages I and II run steps x strength, as diffusers
counts them) with one fresh CPU generator per image; stage I uses the request's guidance, stage II 4.0 and stage
III 9.0 (diffusers' defaults and DeepFloyd's model card); stage III adds noise_level 100. The prompt is encoded
once by stage I's T5 for stages I and II; stage III (the SD x4 upscaler) encodes it with its own CLIP.

Cost, in the queue's unit (SD 1.5 pixel-steps: an SD 1.5 step at WxH costs W*H). Estimated, not measured, from
parameters x positions relative to SD 1.5 (860M UNet on 64x64 latents, ≈1.68 TFLOP per 512² step with CFG):
IF-I-XL (4.3B) on 64x64 pixels ≈ 8.4 TFLOP per step, IF-II-L (1.2B) on 256x256 ≈ 37 TFLOP, the x4 upscaler
(473M) on 256x256 latents ≈ 15 TFLOP. Per stage-I pixel and step that is STEP_COST = 320, 1440 and 560 SD
pixel-steps: one default IF image (64², 50 steps, 2 stages) weighs as much as ~55 SD 1.5 images of 512², 25 steps,
and stage II dominates. Recalibrate STEP_COST from a GPU benchmark when one is run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    DiffusionPipeline,
    IFImg2ImgPipeline,
    IFImg2ImgSuperResolutionPipeline,
    IFInpaintingPipeline,
    IFInpaintingSuperResolutionPipeline,
    IFPipeline,
    IFSuperResolutionPipeline,
    StableDiffusionUpscalePipeline,
)
from PIL import Image

from generation.errors import Cancelled, InvalidRequest
from generation.families.base import Family, StepReporter, generators, per_image
from generation.families.loading import is_local_path, load_pretrained
from generation.request import GenerationRequest, Mode
from generation.samplers import describe_scheduler
from generation.specs import ModelSpec

# Used when `source` is a hub id and the config names no later stage: the model card's companions.
HUB_STAGES = {2: "DeepFloyd/IF-II-L-v1.0", 3: "stabilityai/stable-diffusion-x4-upscaler"}
STAGE_2_GUIDANCE = 4.0
STAGE_3_GUIDANCE = 9.0
STAGE_3_NOISE_LEVEL = 100
STEP_COST = (320, 1440, 560)  # per step and stage-I pixel, stages I, II, III (see the module docstring)
# Progress units per step: the same ratios in small integers (stage I = 1), so one bar spans the cascade.
STEP_UNITS = tuple(max(1, round(cost / STEP_COST[0])) for cost in STEP_COST)
SCALE = 4  # each super-resolution stage's factor

_STAGE_1 = {Mode.TXT2IMG: IFPipeline, Mode.IMG2IMG: IFImg2ImgPipeline, Mode.INPAINT: IFInpaintingPipeline}
_STAGE_2 = {
    Mode.TXT2IMG: IFSuperResolutionPipeline,
    Mode.IMG2IMG: IFImg2ImgSuperResolutionPipeline,
    Mode.INPAINT: IFInpaintingSuperResolutionPipeline,
}

StageCallback = Callable[[int, int, torch.Tensor], None]


def stage_source(spec: ModelSpec, stage: int) -> str:
    """Where stage 2 or 3 comes from: the config's `stage_2`/`stage_3`, else beside a local stage I, else the hub."""
    named = spec.stage_2 if stage == 2 else spec.stage_3
    if named:
        return named
    if is_local_path(spec.source):
        return str(Path(spec.source).expanduser() / f"stage_{stage}")
    return HUB_STAGES[stage]


def denoising_steps(request: GenerationRequest) -> int:
    """Steps stages I and II really run: img2img and inpainting skip the first (1 - strength) of them."""
    if request.mode is Mode.TXT2IMG:
        return request.steps
    return min(int(request.steps * request.strength), request.steps)


def _load(
    spec: ModelSpec, stage: int, cls: type[DiffusionPipeline], device: torch.device, **kwargs: object
) -> DiffusionPipeline:
    source = spec.source if stage == 1 else stage_source(spec, stage)
    # The hub's fp16 variants exist for IF's own stages, not for the SD upscaler.
    variant = None if stage == 3 or is_local_path(source) else spec.variant
    # Errors name the stage's own source, with the same advice as for any model.
    pipe = load_pretrained(
        replace(spec, source=source), lambda path: cls.from_pretrained(path, variant=variant, **kwargs)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _pictures(images: torch.Tensor) -> list[Image.Image]:
    # Pixel-space stages: the current sample (in [-1, 1]) is already a picture; no decoder needed.
    array = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return [Image.fromarray(np.ascontiguousarray(a.permute(1, 2, 0).numpy()), "RGB") for a in array]


def _scaled(image: Image.Image, scale: int) -> Image.Image:
    # Bicubic, as diffusers' IF `resize` does; the same size is left alone (PIL would copy it unchanged).
    return image if scale == 1 else image.resize((image.width * scale, image.height * scale), Image.Resampling.BICUBIC)


def rgb_tensor(images: Sequence[Image.Image], scale: int = 1) -> torch.Tensor:
    """Pictures as a (batch, 3, H, W) tensor in [-1, 1], the arithmetic of diffusers' IF preprocessing."""
    arrays = [np.asarray(_scaled(i.convert("RGB"), scale), dtype=np.float32) / 127.5 - 1 for i in images]
    return torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2))


def mask_tensor(masks: Sequence[Image.Image], scale: int = 1) -> torch.Tensor:
    """Masks as a (batch, 1, H, W) tensor of 0/1 (1 = repaint), thresholded at half as diffusers does."""
    values = np.stack([np.asarray(_scaled(m.convert("L"), scale)) for m in masks])[:, None].astype(np.float32) / 255.0
    return torch.from_numpy(np.where(values >= 0.5, 1.0, 0.0).astype(np.float32))


class CascadeProgress:
    """One progress bar over every stage: each step advances by its stage's weight, toward a fixed total."""

    def __init__(self, report: StepReporter, stages: Sequence[tuple[int, int]]) -> None:
        self._report = report
        self.total = sum(steps * units for steps, units in stages)  # stages: (steps, units per step)
        self.done = 0

    def callback(self, units: int, previews: Callable[[torch.Tensor], list[Image.Image]]) -> StageCallback:
        """A legacy diffusers `callback` that reports each step and stops the call when cancelled."""

        def on_step(index: int, timestep: int, images: torch.Tensor) -> None:
            self.advance(units, lambda: previews(images))
            if self._report.cancelled:
                # IF pipelines have no interrupt flag: an exception is the only way out of their loop.
                raise Cancelled("Cancelled.")

        return on_step

    def advance(self, units: int, previews: Callable[[], list[Image.Image]]) -> None:
        """Count one step; a preview falls due each time the count passes a multiple of `preview_every`."""
        before, self.done = self.done, self.done + units
        every = self._report.preview_every
        mark = self.done // every * every if every else 0
        if before < mark < self.done and self._report.wants_preview(mark, self.total):
            # A heavy step jumps over the multiple: report it on the way, or stage II would never preview.
            self._report.step(mark, self.total, previews)
        self._report.step(self.done, self.total, previews)


class DeepFloydIF(Family):
    """DeepFloyd IF (`if`): pixel parity with the raw diffusers stage I → II (→ III) pipelines is the proof."""

    kinds = ("if",)
    modes = frozenset(Mode)
    negative_prompt = True  # every stage uses classifier-free guidance
    samplers = False  # IF ships its own DDPM schedulers (learned variance, dynamic thresholding)

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(spec, device, dtype)
        # The engine runs its own safety checker (spec.safety_checker) and lets each server's policy decide.
        quiet = {"dtype": dtype, "safety_checker": None, "requires_safety_checker": False}
        first = _load(spec, 1, IFPipeline, device, **quiet)
        second = _load(spec, 2, IFSuperResolutionPipeline, device, text_encoder=None, tokenizer=None, **quiet)
        self._pipes: dict[tuple[int, Mode], DiffusionPipeline] = {(1, Mode.TXT2IMG): first, (2, Mode.TXT2IMG): second}
        self._upscaler: StableDiffusionUpscalePipeline | None = None
        if spec.stages == 3:
            # As the model card does: stage III carries stage I's watermarker (None when the model has none).
            self._upscaler = _load(
                spec,
                3,
                StableDiffusionUpscalePipeline,
                device,
                dtype=dtype,
                safety_checker=None,
                watermarker=first.watermarker,
            )

    @classmethod
    def uses_negative(cls, request: GenerationRequest) -> bool:
        """Always: stage II guides at 4.0 whatever stage I's guidance."""
        return True

    @classmethod
    def check(cls, spec: ModelSpec, request: GenerationRequest) -> None:
        """The common refusals, a stage count IF has, and img2img/inpaint that would run no step."""
        super().check(spec, request)
        if spec.stages not in (2, 3):
            raise InvalidRequest(
                f"The model '{spec.name}' is configured with stages = {spec.stages}; DeepFloyd IF runs 2 or 3 stages."
            )
        if denoising_steps(request) < 1:
            raise InvalidRequest(
                f"{request.steps} steps at strength {request.strength:g} would run no denoising step; "
                "use more steps or a higher strength."
            )

    @classmethod
    def cost(cls, spec: ModelSpec, request: GenerationRequest) -> int:
        """SD 1.5 pixel-steps of the whole cascade (STEP_COST per stage-I pixel and step)."""
        steps = denoising_steps(request)
        per_pixel = (STEP_COST[0] + STEP_COST[1]) * steps
        if spec.stages == 3:
            per_pixel += STEP_COST[2] * request.steps
        return request.width * request.height * request.count * per_pixel

    def pipeline(self, stage: int, mode: Mode) -> DiffusionPipeline:
        """Stage 1 or 2's pipeline for a mode, sharing the resident weights."""
        key = (stage, mode)
        if key not in self._pipes:
            base = self._pipes[(stage, Mode.TXT2IMG)]
            derived = (_STAGE_1 if stage == 1 else _STAGE_2)[mode](**base.components, requires_safety_checker=False)
            derived.set_progress_bar_config(disable=True)
            self._pipes[key] = derived
        return self._pipes[key]

    def core_module(self) -> torch.nn.Module:
        """Stage I's UNet (every request runs it first)."""
        return self._pipes[(1, Mode.TXT2IMG)].unet

    def run(self, requests: Sequence[GenerationRequest], report: StepReporter) -> tuple[list[Image.Image], str]:
        """Stage I, then II (then III): one call per stage for the whole batch."""
        first = requests[0]
        stage_1, stage_2 = self.pipeline(1, first.mode), self.pipeline(2, first.mode)
        steps = denoising_steps(first)
        plan = [(steps, STEP_UNITS[0]), (steps, STEP_UNITS[1])]
        if self._upscaler is not None:
            plan.append((first.steps, STEP_UNITS[2]))
        progress = CascadeProgress(report, plan)

        prompt_embeds, negative_embeds = stage_1.encode_prompt(
            per_image(requests, lambda r: r.prompt),
            do_classifier_free_guidance=True,  # stage II always guides, whatever stage I's guidance
            num_images_per_prompt=1,
            device=stage_1._execution_device,
            negative_prompt=per_image(requests, lambda r: r.negative_prompt),
            clean_caption=False,  # needs bs4 and ftfy; without them diffusers warns and skips it anyway
        )
        common = {
            "prompt_embeds": prompt_embeds,
            "negative_prompt_embeds": negative_embeds,
            "num_inference_steps": first.steps,
            "num_images_per_prompt": 1,
            "callback_steps": 1,
        }
        low = stage_1(
            **common,
            **self._inputs(requests, stage=1),
            guidance_scale=first.guidance,
            generator=generators(requests),
            output_type="pt",
            callback=progress.callback(STEP_UNITS[0], _pictures),
        ).images
        last = self._upscaler is None
        high = stage_2(
            **common,
            **self._inputs(requests, stage=2),
            image=low,
            guidance_scale=STAGE_2_GUIDANCE,
            generator=generators(requests),
            output_type="pil" if last else "pt",
            callback=progress.callback(STEP_UNITS[1], _pictures),
        ).images
        sampler = describe_scheduler(stage_1.scheduler)
        if self._upscaler is None:
            return list(high), sampler
        final = self._upscaler(
            prompt=per_image(requests, lambda r: r.prompt),
            negative_prompt=per_image(requests, lambda r: r.negative_prompt),
            image=(high / 2 + 0.5).clamp(0, 1),  # the upscaler expects [0, 1] tensors
            noise_level=STAGE_3_NOISE_LEVEL,
            num_inference_steps=first.steps,
            guidance_scale=STAGE_3_GUIDANCE,
            generator=generators(requests),
            callback=progress.callback(STEP_UNITS[2], lambda latents: _pictures(high)),  # its latents are not RGB
            callback_steps=1,
        ).images
        return list(final), sampler

    @staticmethod
    def _inputs(requests: Sequence[GenerationRequest], stage: int) -> dict[str, object]:
        first = requests[0]
        scale = 1 if stage == 1 else SCALE
        if first.mode is Mode.TXT2IMG:
            return {"height": first.height * scale, "width": first.width * scale}
        images = rgb_tensor(per_image(requests, lambda r: r.init_image), scale)
        inputs: dict[str, object] = {"image" if stage == 1 else "original_image": images, "strength": first.strength}
        if first.mode is Mode.INPAINT:
            inputs["mask_image"] = mask_tensor(per_image(requests, lambda r: r.mask), scale)
        return inputs
