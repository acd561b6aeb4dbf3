"""Karlo (Kakao Brain's unCLIP, diffusers' UnCLIPPipeline): prior → 64 px decoder → 256 px super-resolution.

diffusers 0.42.1 keeps UnCLIPPipeline under pipelines/deprecated (frozen since 0.33.1; it warns when built) and
still exports it, but its `from_pretrained` cannot resolve the text projection (the hub's model_index.json names
its library "unclip", save_pretrained writes "diffusers"; neither resolves), so `load_unclip` loads the parts one
by one and builds the pipeline from them. It takes no negative prompt (its unconditional text is always empty), no
size (the decoder's and super-resolution UNets' sample sizes: 64 and 256 px) and no picture to start from, so a
negative prompt, any size but 256x256, img2img and inpainting are refused. Nor does it take step callbacks:
progress and cancel hook the `progress_bar` each of its three loops iterates through, so each step is counted when
it finishes and a cancel stops before the next one; there are no previews (the loops' samples are out of reach).

A request's steps and guidance are the decoder's; the prior runs PRIOR_STEPS at PRIOR_GUIDANCE and the
super-resolution SUPER_RES_STEPS, diffusers' defaults (Karlo's super-resolution was trained for 7 steps). One CPU
generator per image drives all three stages, as a single call with one generator does, so a batch draws each
image's noise as its single run would. The pixels can still differ slightly: at the first step UnCLIPScheduler
divides by sqrt(alpha_bar) ≈ 1e-4, which magnifies batched kernels' rounding (plain to see on the tiny random
model in the tests; on trained weights the later steps should pull it back, not yet checked on real Karlo).

Cost (see generation.families.unclip for how FLOPs were counted): per image, a decoder step with CFG is 1.22
TFLOP (885M parameters on 64x64 pixels) and a super-resolution step 8.50 TFLOP (692M parameters, no attention, on
256x256 pixels, one pass), so the 7 super-resolution steps outweigh the decoder's 25. One default image weighs
about 2.4 SD 1.5 images of 512², 25 steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from diffusers import PriorTransformer, UnCLIPPipeline, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
from PIL import Image
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from generation.errors import InvalidRequest
from generation.families.base import Family, StepReporter, generators, per_image
from generation.families.loading import is_local_path, load_pretrained
from generation.families.unclip import (
    PRIOR_GUIDANCE,
    PRIOR_STEP_COST,
    PRIOR_STEPS,
    SD15_FLOPS_PER_PIXEL_STEP,
    Phase,
    PhasedProgress,
)
from generation.request import GenerationRequest, Mode
from generation.samplers import describe_scheduler
from generation.specs import ModelSpec

SIZE = 256  # the super-resolution UNets' sample size
SUPER_RES_STEPS = 7
MIN_STEPS = 2  # UnCLIPScheduler.set_timesteps divides by steps - 1
DECODER_STEP_COST = round(1.2166e12 / SD15_FLOPS_PER_PIXEL_STEP)  # ≈ 198,500 SD pixel-steps per image
SUPER_RES_STEP_COST = round(8.497e12 / SD15_FLOPS_PER_PIXEL_STEP)  # ≈ 1,386,600

_MODELS = {
    "prior": PriorTransformer,
    "decoder": UNet2DConditionModel,
    "text_proj": UnCLIPTextProjModel,
    "super_res_first": UNet2DModel,
    "super_res_last": UNet2DModel,
    "text_encoder": CLIPTextModelWithProjection,
}
_SCHEDULERS = ("prior_scheduler", "decoder_scheduler", "super_res_scheduler")


def load_unclip(path: str, variant: str | None, dtype: torch.dtype) -> UnCLIPPipeline:
    """An UnCLIPPipeline from a diffusers directory or hub id, built from its parts (see the module docstring)."""
    parts: dict[str, Any] = {
        name: cls.from_pretrained(path, subfolder=name, variant=variant, dtype=dtype) for name, cls in _MODELS.items()
    }
    parts |= {name: UnCLIPScheduler.from_pretrained(path, subfolder=name) for name in _SCHEDULERS}
    return UnCLIPPipeline(**parts, tokenizer=CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"))


@contextmanager
def counted_loops(pipe: UnCLIPPipeline, phases: Sequence[Phase]) -> Iterator[None]:
    """Count every step of the pipeline's loops, the i-th loop's in phases[i], for the length of a call."""
    loops = iter(phases)

    def progress_bar(iterable: Iterable[Any], total: int | None = None) -> Iterator[Any]:
        phase = next(loops)
        for item in iterable:
            yield item
            phase.step()  # the step's body has run; raises Cancelled to leave the loop

    pipe.progress_bar = progress_bar  # an instance attribute, over DiffusionPipeline.progress_bar
    try:
        yield
    finally:
        del pipe.progress_bar


class Karlo(Family):
    """Karlo (`karlo`): pixel parity with the raw UnCLIPPipeline is the proof."""

    kinds = ("karlo",)
    modes = frozenset({Mode.TXT2IMG})
    negative_prompt = False  # UnCLIPPipeline guides against the empty prompt only
    samplers = False  # three UnCLIPSchedulers, one per stage

    def __init__(
        self, spec: ModelSpec, device: torch.device, dtype: torch.dtype, pipe: UnCLIPPipeline | None = None
    ) -> None:
        super().__init__(spec, device, dtype)
        if pipe is None:  # `pipe`: an already-built pipeline (tests, benchmarks)
            variant = None if is_local_path(spec.source) else spec.variant
            pipe = load_pretrained(spec, lambda path: load_unclip(path, variant, dtype)).to(device)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe

    @classmethod
    def check(cls, spec: ModelSpec, request: GenerationRequest) -> None:
        """The common refusals (modes, negative prompt, sampler), then Karlo's one size and its fewest steps."""
        super().check(spec, request)
        if request.steps < MIN_STEPS:
            raise InvalidRequest(
                f"The model '{spec.name}' needs at least {MIN_STEPS} steps (its UnCLIPScheduler spaces steps "
                f"between the first and the last), not {request.steps}."
            )
        if (request.width, request.height) != (SIZE, SIZE):
            raise InvalidRequest(
                f"The model '{spec.name}' makes {SIZE}x{SIZE} pictures only (its super-resolution stage's size), "
                f"not {request.width}x{request.height}: leave the size out or choose {SIZE}x{SIZE}."
            )

    @classmethod
    def cost(cls, spec: ModelSpec, request: GenerationRequest) -> int:
        """SD 1.5 pixel-steps of prior, decoder and super-resolution (see the module docstring)."""
        per_image = (
            PRIOR_STEPS * PRIOR_STEP_COST + request.steps * DECODER_STEP_COST + SUPER_RES_STEPS * SUPER_RES_STEP_COST
        )
        return request.count * per_image

    def core_module(self) -> torch.nn.Module:
        """The 64 px decoder."""
        return self._pipe.decoder

    def run(self, requests: Sequence[GenerationRequest], report: StepReporter) -> tuple[list[Image.Image], str]:
        """One UnCLIPPipeline call for the whole batch."""
        first = requests[0]
        # The bar counts decoder steps; a prior or super-resolution step is worth its FLOPs' share of one.
        loops = [
            (PRIOR_STEPS, PRIOR_STEP_COST / DECODER_STEP_COST),
            (first.steps, 1.0),
            (SUPER_RES_STEPS, SUPER_RES_STEP_COST / DECODER_STEP_COST),
        ]
        with counted_loops(self._pipe, PhasedProgress(report, loops).phases):
            images = self._pipe(
                prompt=per_image(requests, lambda r: r.prompt),
                generator=generators(requests),
                num_images_per_prompt=1,
                prior_num_inference_steps=PRIOR_STEPS,
                decoder_num_inference_steps=first.steps,
                super_res_num_inference_steps=SUPER_RES_STEPS,
                prior_guidance_scale=PRIOR_GUIDANCE,
                decoder_guidance_scale=first.guidance,
            ).images
        return list(images), describe_scheduler(self._pipe.decoder_scheduler)
