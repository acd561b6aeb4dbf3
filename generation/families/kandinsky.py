"""Kandinsky 2.2: a CLIP prior (prompt → image embedding), then a UNet on MoVQ latents; txt2img, img2img, inpaint.

Where the parts come from: `source` is the decoder (a diffusers KandinskyV22Pipeline: hub id or directory; a
local one's model_index.json is how `--model DIR` knows the kind). The prior and the inpainting decoder (its UNet
also reads the masked picture, so it is a checkpoint of its own) are the config's `prior` / `inpaint_decoder`,
else `prior/` / `inpaint_decoder/` inside a local `source` (as `imagine-bot tiny-model --kind kandinsky` writes
them), else the kandinsky-community hub repos. The inpainting decoder is loaded the first time someone inpaints.

How a request runs, exactly as diffusers' KandinskyV22CombinedPipeline calls the parts: one CPU generator per
image, seeded with the image's seed, drives the prior (PRIOR_STEPS at PRIOR_GUIDANCE, diffusers' defaults) and
then the decoder (the request's steps and guidance). Without a negative prompt the negative image embedding is
the prior's embedding of an empty picture; with one it is the prior's own sample for the negative prompt, which
is also the prior's unconditional text, so batches split on whether they have one (`batch_key`).

Batching: the prior samples the negative prompts' embeddings in the same call, as rows after the prompts', which
needs a generator per row: each image's generator is given twice ([g1, g2, g1, g2]). torch fills CPU normals in
16-value chunks, so drawing a row and then another from one generator equals drawing both rows at once (what one
image's call does) when rows hold a multiple of 16 values, as Kandinsky 2.2's 1280-wide embeddings do; for other
widths each image's prior runs alone. The inpainting decoder blends every image with the batch's first picture
and mask (diffusers reads `image[:1]`), so inpainting decodes one request at a time. It also runs every step:
KandinskyV22InpaintPipeline takes no strength.

Sizes: MoVQ downsamples 8x and diffusers rounds latents up to multiples of 8, so sides are multiples of 64 (others
would silently come out larger). Samplers: the decoder loop never scales model inputs, which A1111's Euler-type
samplers need, so the model's own scheduler is kept.

Progress is one bar counted in decoder steps, the prior's 25 steps first at what their FLOPs are worth (2 decoder
steps at 768²); previews decode the latents with MoVQ every `preview_every` decoder steps.

Cost (see generation.families.unclip for how FLOPs were counted): a decoder step with CFG is 1.71 TFLOP at 512²
and 3.99 TFLOP at 768², 1.07x and 1.10x SD 1.5's per pixel; the prior adds PRIOR_STEP_COST per step and image,
twice with a negative prompt (twice the rows). One default image (768², 50 steps) weighs about 5 SD 1.5 images of
512², 25 steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    DiffusionPipeline,
    KandinskyV22Img2ImgPipeline,
    KandinskyV22InpaintPipeline,
    KandinskyV22Pipeline,
    KandinskyV22PriorPipeline,
)
from PIL import Image

from generation.errors import InvalidRequest
from generation.families.base import Family, StepReporter, generators, per_image
from generation.families.loading import is_local_path, load_pretrained
from generation.families.unclip import PRIOR_GUIDANCE, PRIOR_STEP_COST, PRIOR_STEPS, Phase, PhasedProgress
from generation.request import GenerationRequest, Mode
from generation.samplers import describe_scheduler
from generation.specs import ModelSpec

HUB_PRIOR = "kandinsky-community/kandinsky-2-2-prior"
HUB_INPAINT_DECODER = "kandinsky-community/kandinsky-2-2-decoder-inpaint"
PRIOR_DIR, INPAINT_DIR = "prior", "inpaint_decoder"  # inside a local `source`
SIZE_MULTIPLE = 64  # MoVQ's 8x, times the 8 diffusers rounds latents up to
DECODER_COST = 1.1  # SD 1.5 pixel-steps per pixel and decoder step (FLOP-counted; see the module docstring)
RANDN_CHUNK = 16  # torch's CPU normal_ fills this many values at a time


def part_source(spec: ModelSpec, part: str) -> str:
    """Where the prior or the inpainting decoder comes from: the config's, else inside a local source, else the hub."""
    named = spec.prior if part == PRIOR_DIR else spec.inpaint_decoder
    if named:
        return named
    if is_local_path(spec.source):
        return str(Path(spec.source).expanduser() / part)
    return HUB_PRIOR if part == PRIOR_DIR else HUB_INPAINT_DECODER


def has_inpaint_decoder(spec: ModelSpec) -> bool:
    """Whether inpainting can load (a configured or hub decoder is taken on trust; a local one must be there)."""
    source = part_source(spec, INPAINT_DIR)
    return not is_local_path(source) or (Path(source).expanduser() / "model_index.json").is_file()


def decoder_steps(request: GenerationRequest) -> int:
    """Decoder steps that run: img2img skips the first (1 - strength); inpainting runs them all."""
    if request.mode is Mode.IMG2IMG:
        return min(int(request.steps * request.strength), request.steps)
    return request.steps


def _load(spec: ModelSpec, source: str, cls: type[DiffusionPipeline], device: torch.device, dtype: torch.dtype):
    variant = None if is_local_path(source) else spec.variant
    # Errors name the part's own source, with the same advice as for any model.
    pipe = load_pretrained(
        replace(spec, source=source), lambda path: cls.from_pretrained(path, variant=variant, dtype=dtype)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _pictures(images: torch.Tensor) -> list[Image.Image]:
    # MoVQ decodes to [-1, 1]; the same arithmetic as the pipelines' own "pil" output.
    array = (images.detach().float() * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in array]


class Kandinsky(Family):
    """Kandinsky 2.2 (`kandinsky`): pixel parity with the raw prior and decoder pipelines is the proof."""

    kinds = ("kandinsky",)
    modes = frozenset(Mode)
    negative_prompt = True  # the prior samples a negative image embedding from it
    samplers = False  # see the module docstring
    size_multiple = SIZE_MULTIPLE

    def __init__(
        self,
        spec: ModelSpec,
        device: torch.device,
        dtype: torch.dtype,
        prior: KandinskyV22PriorPipeline | None = None,
        decoder: KandinskyV22Pipeline | None = None,
        inpaint_decoder: KandinskyV22InpaintPipeline | None = None,
    ) -> None:
        super().__init__(spec, device, dtype)
        # Already-built parts may be given (tests, benchmarks); the rest load from the spec.
        self._prior = prior or _load(spec, part_source(spec, PRIOR_DIR), KandinskyV22PriorPipeline, device, dtype)
        base = decoder or _load(spec, spec.source, KandinskyV22Pipeline, device, dtype)
        self._decoders: dict[Mode, DiffusionPipeline] = {Mode.TXT2IMG: base}
        if inpaint_decoder is not None:
            self._decoders[Mode.INPAINT] = inpaint_decoder
        for pipe in (self._prior, *self._decoders.values()):
            pipe.set_progress_bar_config(disable=True)

    @classmethod
    def uses_negative(cls, request: GenerationRequest) -> bool:
        """Always: the prior guides at PRIOR_GUIDANCE whatever the decoder's guidance."""
        return True

    @classmethod
    def check(cls, spec: ModelSpec, request: GenerationRequest) -> None:
        """The common refusals (sides in multiples of 64), img2img that would run no step, inpainting without its
        decoder."""
        super().check(spec, request)
        if decoder_steps(request) < 1:
            raise InvalidRequest(
                f"{request.steps} steps at strength {request.strength:g} would run no denoising step; "
                "use more steps or a higher strength."
            )
        if request.mode is Mode.INPAINT and not has_inpaint_decoder(spec):
            raise InvalidRequest(
                f"The model '{spec.name}' has no inpainting decoder (there is none at "
                f"{part_source(spec, INPAINT_DIR)}); it can do txt2img and img2img. Leave the mask out."
            )

    @classmethod
    def batch_key(cls, request: GenerationRequest) -> tuple[object, ...]:
        """The prior reads negative prompts for a whole call or not at all: requests with and without run apart."""
        return (*request.batch_key, bool(request.negative_prompt))

    @classmethod
    def cost(cls, spec: ModelSpec, request: GenerationRequest) -> int:
        """SD 1.5 pixel-steps of the decoder plus the prior (see the module docstring)."""
        decoder = request.width * request.height * decoder_steps(request) * DECODER_COST
        prior = PRIOR_STEPS * PRIOR_STEP_COST * (2 if request.negative_prompt else 1)
        return request.count * round(decoder + prior)

    def decoder(self, mode: Mode) -> DiffusionPipeline:
        """The decoder for a mode: img2img shares the text-to-image weights; inpainting has its own."""
        if mode not in self._decoders:
            if mode is Mode.IMG2IMG:
                derived = KandinskyV22Img2ImgPipeline(**self._decoders[Mode.TXT2IMG].components)
                derived.set_progress_bar_config(disable=True)
            else:
                derived = _load(
                    self.spec, part_source(self.spec, INPAINT_DIR), KandinskyV22InpaintPipeline, self.device, self.dtype
                )
            self._decoders[mode] = derived
        return self._decoders[mode]

    def core_module(self) -> torch.nn.Module:
        """The text-to-image decoder's UNet."""
        return self._decoders[Mode.TXT2IMG].unet

    def run(self, requests: Sequence[GenerationRequest], report: StepReporter) -> tuple[list[Image.Image], str]:
        """The prior for the whole batch, then the decoder (one call; inpainting one per request)."""
        first = requests[0]
        decoder = self.decoder(first.mode)
        gens = generators(requests)
        together = not any(r.negative_prompt for r in requests) or self._embedding_dim % RANDN_CHUNK == 0
        calls = len(requests) if first.mode is Mode.INPAINT else 1
        # The bar counts decoder steps; a prior step of the batch is worth its FLOPs' share of one.
        prior = PRIOR_STEP_COST * (2 if first.negative_prompt else 1) / (first.width * first.height * DECODER_COST)
        prior_loop = (PRIOR_STEPS, prior) if together else (PRIOR_STEPS * len(gens), prior / len(gens))
        progress = PhasedProgress(report, [prior_loop, (decoder_steps(first) * calls, 1.0)])
        prior_phase, decoder_phase = progress.phases
        embeds, negative_embeds = self._image_embeds(requests, gens, together, prior_phase)
        common = {
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "height": first.height,
            "width": first.width,
            "num_images_per_prompt": 1,
        }
        if first.mode is not Mode.INPAINT:
            preview = self._preview(decoder) if report.preview_every else None
            inputs: dict[str, object] = {}
            if first.mode is Mode.IMG2IMG:
                # KandinskyV22Img2ImgPipeline calls VaeImageProcessor.preprocess(image, width, height), whose
                # parameters are (image, height, width): given as asked, a non-square picture comes out transposed.
                # Its height and width are used nowhere else, so they go in swapped.
                inputs = {"image": per_image(requests, lambda r: r.init_image), "strength": first.strength}
                inputs |= {"height": first.width, "width": first.height}
            images = decoder(
                image_embeds=embeds,
                negative_image_embeds=negative_embeds,
                generator=gens,
                **(common | inputs),
                callback_on_step_end=decoder_phase.on_step_end(preview),
                callback_on_step_end_tensor_inputs=["latents"],
            ).images
            return list(images), describe_scheduler(decoder.scheduler)
        images, start = [], 0
        # Previews are per image of the whole batch: only when one call makes them all.
        preview = self._preview(decoder) if report.preview_every and len(requests) == 1 else None
        for request in requests:
            rows = slice(start, start + request.count)
            images += decoder(
                image_embeds=embeds[rows],
                negative_image_embeds=negative_embeds[rows],
                image=[request.init_image] * request.count,
                mask_image=[request.mask] * request.count,
                generator=gens[rows],
                **common,
                callback_on_step_end=decoder_phase.on_step_end(preview),
                callback_on_step_end_tensor_inputs=["latents"],
            ).images
            start += request.count
        return images, describe_scheduler(decoder.scheduler)

    @property
    def _embedding_dim(self) -> int:
        return int(self._prior.prior.config.embedding_dim)

    def _image_embeds(
        self,
        requests: Sequence[GenerationRequest],
        gens: list[torch.Generator],
        together: bool,
        phase: Phase,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image embeddings and negative image embeddings, one row per image, each from its image's generator."""
        prompts = per_image(requests, lambda r: r.prompt)
        negatives = per_image(requests, lambda r: r.negative_prompt)
        common = {
            "num_images_per_prompt": 1,
            "num_inference_steps": PRIOR_STEPS,
            "guidance_scale": PRIOR_GUIDANCE,
            "callback_on_step_end": phase.on_step_end(),
        }
        if together:
            # Negative prompts' rows follow the prompts': each generator draws its image's two rows in order.
            negative = negatives if any(negatives) else None
            output = self._prior(
                prompts, negative_prompt=negative, generator=gens + gens if negative else gens, **common
            )
            return output.image_embeds, output.negative_image_embeds
        outputs = [
            self._prior(prompt, negative_prompt=negative or None, generator=g, **common)
            for prompt, negative, g in zip(prompts, negatives, gens, strict=True)
        ]
        return torch.cat([o.image_embeds for o in outputs]), torch.cat([o.negative_image_embeds for o in outputs])

    @staticmethod
    def _preview(decoder: DiffusionPipeline):
        def preview(latents: torch.Tensor) -> list[Image.Image]:
            with torch.no_grad():  # a full MoVQ decode: previews come every few steps only
                return _pictures(decoder.movq.decode(latents, force_not_quantize=True)["sample"])

        return preview
