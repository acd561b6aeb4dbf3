"""Stable Diffusion 1.x/2.x, Turbo and SDXL: one resident text-to-image pipeline, img2img/inpaint derived from it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from diffusers import (
    AutoencoderTiny,
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image

from generation.families.adapters import AdapterCache
from generation.families.base import Family, StepReporter, generators, per_image, run_pipeline
from generation.families.loading import is_local_path, load_pretrained
from generation.families.prompt_embeds import needs_embeddings, prompt_embeddings
from generation.preview import LinearPreviewer, Previewer, TinyVaePreviewer
from generation.prompt_syntax import parse_prompt
from generation.request import GenerationRequest, Mode
from generation.samplers import describe_scheduler, make_scheduler
from generation.specs import SINGLE_FILE_SUFFIXES, LoraSpec, ModelSpec

log = logging.getLogger(__name__)

_AUTO_PIPELINES = {
    Mode.TXT2IMG: AutoPipelineForText2Image,
    Mode.IMG2IMG: AutoPipelineForImage2Image,
    Mode.INPAINT: AutoPipelineForInpainting,
}


def load_pipeline(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    """A text-to-image pipeline for a spec, on the device, without a built-in safety checker."""
    kwargs: dict[str, object] = {"dtype": dtype}
    if spec.kind == "sd":
        # We run the checker ourselves so a blocked image can still be spoilered if policy says so.
        kwargs |= {"safety_checker": None, "requires_safety_checker": False}
    if spec.source.endswith(SINGLE_FILE_SUFFIXES):
        cls = StableDiffusionXLPipeline if spec.kind == "sdxl" else StableDiffusionPipeline
        pipe = load_pretrained(spec, lambda path: cls.from_single_file(path, config=spec.config, **kwargs))
    else:
        variant = None if is_local_path(spec.source) else spec.variant
        pipe = load_pretrained(
            spec, lambda path: AutoPipelineForText2Image.from_pretrained(path, variant=variant, **kwargs)
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class StableDiffusion(Family):
    """SD 1.x/2.x (`sd`) and SDXL (`sdxl`): pixel parity with the raw diffusers pipelines is the proof."""

    kinds = ("sd", "sdxl")
    modes = frozenset(Mode)
    loras = True

    def __init__(
        self, spec: ModelSpec, device: torch.device, dtype: torch.dtype, pipe: DiffusionPipeline | None = None
    ) -> None:
        super().__init__(spec, device, dtype)
        # `pipe`: an already-built pipeline (benchmarks build full-size random weights in memory).
        self._pipes = {Mode.TXT2IMG: pipe if pipe is not None else load_pipeline(spec, device, dtype)}
        self._scheduler = self._pipes[Mode.TXT2IMG].scheduler  # as shipped; each call gets a fresh copy
        self._previewer: Previewer | None = None
        self.adapters = AdapterCache(self._pipes[Mode.TXT2IMG])  # modes derived with from_pipe share its modules

    def use_loras(self, loras: Sequence[tuple[LoraSpec, float]]) -> None:
        """Activate exactly these LoRAs (loading what is not resident); none: the base model exactly."""
        self.adapters.use(loras)

    @property
    def resident_loras(self) -> frozenset[str]:
        """The LoRAs loaded now."""
        return self.adapters.resident

    def pipeline(self, mode: Mode) -> DiffusionPipeline:
        """The pipeline for a mode, sharing the resident weights."""
        if mode not in self._pipes:
            # Without dtype= from_pipe casts the shared modules to fp32, undoing fp16 for every mode.
            derived = _AUTO_PIPELINES[mode].from_pipe(self._pipes[Mode.TXT2IMG], dtype=self.dtype)
            derived.set_progress_bar_config(disable=True)
            self._pipes[mode] = derived
        return self._pipes[mode]

    def core_module(self) -> torch.nn.Module:
        """The UNet."""
        return self._pipes[Mode.TXT2IMG].unet

    def run(self, requests: Sequence[GenerationRequest], report: StepReporter) -> tuple[list[Image.Image], str]:
        """One diffusers call for the whole batch."""
        first = requests[0]
        pipe = self.pipeline(first.mode)
        pipe.scheduler = make_scheduler(first.sampler, self._scheduler)
        previewer = self._preview() if report.preview_every else None
        images = run_pipeline(pipe, self._arguments(pipe, requests), report, previewer)
        return images, first.sampler or describe_scheduler(pipe.scheduler)

    def _arguments(self, pipe: DiffusionPipeline, requests: Sequence[GenerationRequest]) -> dict[str, object]:
        first = requests[0]
        arguments: dict[str, object] = {
            "generator": generators(requests),
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "num_images_per_prompt": 1,
        } | self._prompts(pipe, requests)
        if first.mode is Mode.TXT2IMG:
            arguments |= {"height": first.height, "width": first.width}
        else:
            arguments |= {"image": per_image(requests, lambda r: r.init_image), "strength": first.strength}
        if first.mode is Mode.INPAINT:
            arguments |= {"mask_image": per_image(requests, lambda r: r.mask), "height": first.height}
            arguments |= {"width": first.width}
        return arguments

    def _prompts(self, pipe: DiffusionPipeline, requests: Sequence[GenerationRequest]) -> dict[str, object]:
        # A1111 syntax: text without any (or weights of exactly 1) that fits one CLIP window stays text for
        # diffusers to encode, as before; weights, BREAK or a longer prompt need our embeddings.
        guided = self.uses_negative(requests[0])  # CFG runs: the negative side is encoded at all
        zeros = getattr(pipe.config, "force_zeros_for_empty_prompt", False) and guided
        prompts = [parse_prompt(p) for p in per_image(requests, lambda r: r.prompt)]
        negatives = [parse_prompt(n) for n in per_image(requests, lambda r: r.negative_prompt)]
        if needs_embeddings(pipe, prompts + negatives if guided else prompts):
            return prompt_embeddings(pipe, prompts, negatives if guided else None, zero_empty=zeros)
        return self._negatives(pipe, [p.text for p in prompts], [n.text for n in negatives], zeros)

    def _negatives(
        self, pipe: DiffusionPipeline, prompts: list[str], negatives: list[str], zeros: bool
    ) -> dict[str, object]:
        if not zeros or all(negatives):
            return {"prompt": prompts, "negative_prompt": negatives}
        if not any(negatives):
            # SDXL and Stability's reference condition "no negative prompt" on zeros, not on the encoded "".
            return {"prompt": prompts, "negative_prompt": None}
        # A mixed batch: encode as diffusers does, then zero the rows that had no negative prompt.
        prompt, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompts,
            device=pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=negatives,
        )
        empty = torch.tensor([not n for n in negatives], device=negative.device)
        negative[empty] = 0
        negative_pooled[empty] = 0
        return {
            "prompt": None,
            "prompt_embeds": prompt,
            "negative_prompt_embeds": negative,
            "pooled_prompt_embeds": pooled,
            "negative_pooled_prompt_embeds": negative_pooled,
        }

    def _preview(self) -> Previewer:
        if self._previewer is None:
            if self.spec.preview_vae:
                vae = AutoencoderTiny.from_pretrained(self.spec.preview_vae, dtype=self.dtype).to(self.device)
                self._previewer = TinyVaePreviewer(vae)
            else:
                self._previewer = LinearPreviewer(self.spec.kind)
        return self._previewer
