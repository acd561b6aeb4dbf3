"""Turning what a user typed (every field optional) into a validated GenerationRequest."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from generation.catalog import family_for
from generation.errors import InvalidRequest
from generation.images import DEFAULT_LIMITS, ImageLimits, prepare_inputs, size_for_image
from generation.loras import Given, loras_for_prompt
from generation.request import GenerationRequest, Mode, random_seed
from generation.samplers import resolve_sampler
from generation.specs import LoraSpec, ModelSpec

_SIZE = re.compile(r"^\s*(\d+)\s*[x×*]\s*(\d+)\s*$", re.IGNORECASE)
_ASPECT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class UserOptions:
    """Options as given by a person; None means 'use the model's default'."""

    prompt: str
    negative: str = ""
    size: str | None = None  # "WxH" or an aspect ratio "W:H"
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    count: int = 1
    strength: float | None = None
    sampler: str | None = None
    image: bytes | None = None
    mask: bytes | None = None
    loras: tuple[Given, ...] = ()  # picked beside the prompt (/imagine lora:, --lora); weight None: its default


def parse_size(text: str, target_pixels: int, multiple: int = 8) -> tuple[int, int]:
    """'768x512' as given, or '3:2' scaled to about the model's default area (sides multiples of `multiple`)."""
    if match := _SIZE.match(text):
        return int(match[1]), int(match[2])
    if match := _ASPECT.match(text):
        ratio_w, ratio_h = float(match[1]), float(match[2])
        if ratio_w > 0 and ratio_h > 0 and max(ratio_w / ratio_h, ratio_h / ratio_w) <= 4:
            return size_for_image(ratio_w, ratio_h, target_pixels, multiple)
    raise InvalidRequest(f"Size '{text}' is not like 512x768 or 3:2 (aspect ratios up to 4:1).")


def make_request(
    spec: ModelSpec,
    options: UserOptions,
    limits: ImageLimits = DEFAULT_LIMITS,
    loras: Mapping[str, LoraSpec] | None = None,
) -> GenerationRequest:
    """Apply the model's defaults, decode any images, and validate everything.

    LoRAs come from the prompt's `<lora:NAME:WEIGHT>` tags and `options.loras`, which are added to the prompt
    as tags (A1111 keeps them there); `loras` gives the default weights. Unknown names are refused by the
    catalog's check, before anything is stored.
    """
    prompt, chosen = loras_for_prompt(options.prompt, options.loras, loras or {})
    if options.mask is not None and options.image is None:
        raise InvalidRequest("A mask needs an image to go with it.")
    # Aspect ratios and pictures are sized to what the model's family can take (FLUX and SD3: multiples of 16).
    multiple = family_for(spec.kind).size_multiple
    size = parse_size(options.size, spec.pixels, multiple) if options.size else None
    mode, init, mask = Mode.TXT2IMG, None, None
    if options.image is not None:
        inputs = prepare_inputs(
            options.image, options.mask, size=size, target_pixels=spec.pixels, limits=limits, multiple=multiple
        )
        mode = Mode.INPAINT if inputs.mask is not None else Mode.IMG2IMG
        init, mask, size = inputs.image, inputs.mask, (inputs.width, inputs.height)
    width, height = size or (spec.width, spec.height)
    sampler = options.sampler or spec.sampler
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=options.negative,
        model=spec.name,
        mode=mode,
        width=width,
        height=height,
        steps=options.steps if options.steps is not None else spec.steps,
        guidance=options.guidance if options.guidance is not None else spec.guidance,
        seed=options.seed if options.seed is not None else random_seed(),
        count=options.count,
        strength=options.strength if options.strength is not None else 0.75,
        sampler=resolve_sampler(sampler) if sampler else None,
        loras=chosen,
        init_image=init,
        mask=mask,
    )
