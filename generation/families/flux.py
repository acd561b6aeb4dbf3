"""FLUX.1 schnell and dev: guidance-distilled flow transformers with CLIP + T5 prompts.

Negative prompts: FLUX.1 is distilled and has no classifier-free guidance of its own, so diffusers'
`true_cfg_scale` applies one given: a second transformer pass per step on the negative prompt, at
TRUE_CFG_SCALE. The cost doubles and `cost()` says so. We apply rather than refuse because a server's own
negative prompt is appended to every job (bot.moderation.policy): refusing would shut FLUX out there.

Guidance: dev embeds it (transformer config `guidance_embeds`), so the request's guidance goes to
`guidance_scale` as that embedding; schnell has no guidance input and diffusers ignores the value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from diffusers import DiffusionPipeline, FluxImg2ImgPipeline, FluxInpaintPipeline, FluxPipeline

from generation.families.base import per_image
from generation.families.flow import FlowMatchFamily, TransformerShape, relative_cost, transformer_config, width_of
from generation.request import GenerationRequest, Mode
from generation.specs import ModelSpec

# The value diffusers' FLUX documentation uses with a negative prompt.
TRUE_CFG_SCALE = 4.0
# T5 tokens by default: schnell was distilled with 256, dev with 512 (Black Forest Labs' reference code).
SCHNELL_TOKENS, DEV_TOKENS = 256, 512
# FLUX.1: 19 joint + 38 single blocks, 24 heads of 128; used when the config is not at hand.
FLUX1 = TransformerShape(blocks=19 + 38, width=3072)

# ComfyUI's least-squares fit from FLUX.1's 16 latent channels (scaled, as the pipeline holds them) to RGB.
FLUX_RGB_FACTORS = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)
FLUX_RGB_BIAS = (-0.0329, -0.0718, -0.0851)


class Flux(FlowMatchFamily):
    """FLUX.1 (`flux`): pixel parity with the raw diffusers Flux pipelines is the proof."""

    kinds = ("flux",)
    pipelines: ClassVar[Mapping[Mode, type[DiffusionPipeline]]] = {
        Mode.TXT2IMG: FluxPipeline,
        Mode.IMG2IMG: FluxImg2ImgPipeline,
        Mode.INPAINT: FluxInpaintPipeline,
    }
    negative_prompt = True  # through true CFG, at twice the cost
    loras = True  # diffusers' FluxLoraLoaderMixin: transformer (and CLIP) adapters
    rgb_factors = FLUX_RGB_FACTORS
    rgb_bias = FLUX_RGB_BIAS

    def default_max_tokens(self) -> int:
        """schnell's 256 T5 tokens, or dev's 512 (told apart by dev's embedded guidance)."""
        return DEV_TOKENS if self.core_module().config.guidance_embeds else SCHNELL_TOKENS

    @classmethod
    def uses_negative(cls, request: GenerationRequest) -> bool:
        """Always: true CFG runs at its own scale, whatever the (embedded) guidance."""
        return True

    @classmethod
    def batch_key(cls, request: GenerationRequest) -> tuple[object, ...]:
        """True CFG is all or nothing per call: requests with and without a negative prompt run apart."""
        return (*request.batch_key, bool(request.negative_prompt))

    @classmethod
    def cost(cls, spec: ModelSpec, request: GenerationRequest) -> int:
        """About 11x SD 1.5's pixel-steps at 1024² (more at larger sizes: attention), twice with a negative prompt."""
        config = transformer_config(spec)
        shape = FLUX1
        if "num_layers" in config:
            blocks = int(config["num_layers"]) + int(config.get("num_single_layers", 0))
            shape = TransformerShape(blocks=blocks, width=width_of(config, FLUX1.width))
        tokens = spec.max_tokens or (SCHNELL_TOKENS if config.get("guidance_embeds") is False else DEV_TOKENS)
        return relative_cost(request, shape, tokens, passes=2 if request.negative_prompt else 1)

    def negatives(self, requests: Sequence[GenerationRequest]) -> dict[str, object]:
        """True CFG when the batch has negative prompts (batch_key keeps batches all-or-none)."""
        negatives = per_image(requests, lambda r: r.negative_prompt)
        if not any(negatives):
            return {}
        return {"negative_prompt": negatives, "true_cfg_scale": TRUE_CFG_SCALE}

    def spatial(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Unpack (batch, tokens, 64) into (batch, 16, h/8, w/8) for previews."""
        scale = self._pipes[Mode.TXT2IMG].vae_scale_factor
        return FluxPipeline._unpack_latents(latents, height, width, scale)
