"""Stable Diffusion 3 and 3.5: an MMDiT flow transformer with classifier-free guidance and negative prompts.

The prompt goes to two CLIP encoders (77 tokens each, truncated) and T5 (`max_sequence_length`,
default 256 as in diffusers and Stability's reference). As with SD, guidance at or below 1 turns
CFG off in diffusers, and with it the negative prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from diffusers import (
    DiffusionPipeline,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusion3InpaintPipeline,
    StableDiffusion3Pipeline,
)

from generation.families.base import per_image
from generation.families.flow import FlowMatchFamily, TransformerShape, relative_cost, transformer_config, width_of
from generation.request import GenerationRequest, Mode
from generation.specs import ModelSpec

CLIP_TOKENS = 77
# SD 3.5 Large: 38 blocks, 38 heads of 64. Used when the config is not at hand: the heaviest SD3 is the
# safe guess for fairness (SD3 Medium, 24 blocks of 1536, is about a quarter of it).
SD35_LARGE = TransformerShape(blocks=38, width=2432)

# ComfyUI's least-squares fit from SD3's 16 latent channels (scaled, as the pipeline holds them) to RGB.
SD3_RGB_FACTORS = (
    (-0.0922, -0.0175, 0.0749),
    (0.0311, 0.0633, 0.0954),
    (0.1994, 0.0927, 0.0458),
    (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496),
    (-0.0006, 0.1104, 0.0309),
    (0.0978, 0.0306, 0.0427),
    (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669),
    (-0.0488, 0.0130, -0.0268),
    (0.0922, 0.0988, 0.0951),
    (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895),
    (-0.0069, -0.0030, -0.0810),
    (-0.0596, -0.0465, -0.0293),
    (-0.1448, -0.1463, -0.1189),
)
SD3_RGB_BIAS = (0.2394, 0.2135, 0.1925)


class StableDiffusion3(FlowMatchFamily):
    """SD3/3.5 (`sd3`): pixel parity with the raw diffusers SD3 pipelines is the proof."""

    kinds = ("sd3",)
    pipelines: ClassVar[Mapping[Mode, type[DiffusionPipeline]]] = {
        Mode.TXT2IMG: StableDiffusion3Pipeline,
        Mode.IMG2IMG: StableDiffusion3Img2ImgPipeline,
        Mode.INPAINT: StableDiffusion3InpaintPipeline,
    }
    rgb_factors = SD3_RGB_FACTORS
    rgb_bias = SD3_RGB_BIAS

    @classmethod
    def cost(cls, spec: ModelSpec, request: GenerationRequest) -> int:
        """SD 1.5 pixel-steps weighted by the transformer's FLOPs: about 2.7x (3 Medium) to 9x (3.5 Large) at 1024²."""
        config = transformer_config(spec)
        shape = SD35_LARGE
        if "num_layers" in config:
            shape = TransformerShape(blocks=int(config["num_layers"]), width=width_of(config, SD35_LARGE.width))
        tokens = CLIP_TOKENS + (spec.max_tokens or 256)
        return relative_cost(request, shape, tokens, passes=2 if request.guidance > 1 else 1)

    def negatives(self, requests: Sequence[GenerationRequest]) -> dict[str, object]:
        """One negative prompt per image; "" is what diffusers encodes when there is none."""
        return {"negative_prompt": per_image(requests, lambda r: r.negative_prompt)}
