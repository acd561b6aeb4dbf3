"""Upscalers as a model family, so an upscale is an ordinary job of the fair queue (Upscale buttons, /upscale).

An upscale is an img2img-shaped GenerationRequest on the upscaler's name carrying `upscale` (generation.request.
Upscale): the init image holds the picture at its top left, grown to the request size rules (sides multiples of
8, at least 64); the family cuts the picture back out and hands it to generation.upscalers, so the result is
exactly `scale` times the picture and equals `load_upscaler(spec).upscale(picture, scale=scale)` called directly.
The picture's own A1111 parameters ride along and are kept in the result's (generation.metadata); the SD x4
upscaler reads its prompt and negative prompt from them, as `imagine-bot upscale` does (the job's prompt is only
its title: an upload without parameters has none to read).

One resident model, as every family: the loaded upscaler. Progress counts tiles (sd-x4: its denoising steps of
every tile) through the StepReporter; a cancel is honoured between tiles (sd-x4: between steps). Cost is
generation.upscalers.upscale_cost, by output pixels of the network's own factor. The network's factor is read
from its file once per upscaler (`network_scale_of`); the bot asks for it off the event loop before queueing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch
from PIL import Image

from generation.errors import InvalidRequest, ModelUnavailable
from generation.families.base import Family, StepReporter
from generation.metadata import own_prompt
from generation.request import MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE, GenerationRequest, Mode, Upscale
from generation.specs import ModelSpec, UpscalerModel, UpscalerSpec
from generation.upscalers import load_upscaler, network_scale, upscale_cost

log = logging.getLogger(__name__)


@lru_cache(maxsize=64)
def network_scale_of(spec: UpscalerSpec) -> int:
    """The network's own factor (spandrel reads the file on the CPU the first time: call it off the event loop)."""
    return network_scale(spec)


def scale_for(spec: UpscalerSpec, asked: int | None = None) -> int:
    """The factor to upscale by: `asked`, else the configured `scale`, else the network's; refuses too large,
    and an upscaler whose file cannot be read (the operator's log says why; the member is told it is out)."""
    try:
        most = network_scale_of(spec)
    except ModelUnavailable as exc:
        log.warning("%s", exc.user_message)
        raise InvalidRequest(
            f"The upscaler '{spec.name}' cannot be used right now: its files are missing or damaged on the bot's "
            "machine (its operator has been told)."
        ) from None
    chosen = asked if asked is not None else (spec.scale or most)
    if not 1 <= chosen <= most:
        raise InvalidRequest(
            f"The upscaler '{spec.name}' enlarges up to {most}x, so a scale of {chosen} is not possible: "
            f"pick 1 to {most}."
        )
    return chosen


def _grown(picture: Image.Image) -> Image.Image:
    """The picture at the top left of a canvas whose sides follow the request rules (cut back off before upscaling)."""
    width, height = (max(MIN_SIDE, -(-side // SIZE_MULTIPLE) * SIZE_MULTIPLE) for side in picture.size)
    if (width, height) == picture.size:
        return picture
    canvas = Image.new("RGB", (width, height))
    canvas.paste(picture, (0, 0))
    return canvas


def upscale_request(
    spec: UpscalerSpec,
    picture: Image.Image,
    *,
    scale: int,
    prompt: str,
    seed: int,
    parameters: str | None = None,
) -> GenerationRequest:
    """The job that upscales `picture` (RGB) `scale` times with this upscaler.

    `prompt` titles the job; `parameters` are the picture's own A1111 text, kept in the result's, and sd-x4 reads
    the prompt and negative prompt in them (as `imagine-bot upscale` does), with `seed`; a network reads neither.
    """
    if max(picture.size) > MAX_SIDE:
        raise InvalidRequest(
            f"The picture is {picture.width}x{picture.height}; upscaling takes pictures up to {MAX_SIDE} pixels a side."
        )
    canvas = _grown(picture.convert("RGB"))
    model = spec.as_model()
    return GenerationRequest(
        prompt=prompt,
        model=spec.name,
        mode=Mode.IMG2IMG,
        width=canvas.width,
        height=canvas.height,
        steps=model.steps,
        guidance=model.guidance,
        seed=seed,
        upscale=Upscale(scale=scale, width=picture.width, height=picture.height, parameters=parameters or ""),
        init_image=canvas,
    )


class Upscaling(Family):
    """An upscaler (`[[upscalers]]`) serving upscale requests: pixel parity with generation.upscalers is the proof."""

    kinds = ()
    modes = frozenset({Mode.IMG2IMG})
    negative_prompt = False  # sd-x4 reads the picture's own; the server's negative prompt is not added to it
    samplers = False

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(spec, device, dtype)
        self.upscaler = load_upscaler(_upscaler_spec(spec), device, dtype)

    @classmethod
    def check(cls, spec: ModelSpec, request: GenerationRequest) -> None:
        """The common refusals, a request that is not an upscale, and a scale past the network's."""
        if request.upscale is None:
            raise InvalidRequest(
                f"'{spec.name}' is an upscaler: it enlarges pictures (the Upscale buttons and /upscale) and cannot "
                "draw from a prompt. Pick a model to draw with."
            )
        super().check(spec, request)
        scale_for(_upscaler_spec(spec), request.upscale.scale)

    @classmethod
    def batch_key(cls, request: GenerationRequest) -> tuple[Any, ...]:
        """One picture per call: a batch would only run the pictures one after another and hold the first back."""
        return (*request.batch_key, request.seed, request.prompt, request.upscale)

    @classmethod
    def cost(cls, spec: ModelSpec, request: GenerationRequest) -> int:
        """Output pixels of the network's own factor (generation.upscalers.upscale_cost)."""
        upscaler, upscale = _upscaler_spec(spec), request.upscale
        if upscale is None:
            return request.cost
        try:
            network = network_scale_of(upscaler)
        except ModelUnavailable:  # its file is gone: the job fails when it runs, saying so; costing must not
            network = upscale.scale
        return upscale_cost(upscaler, upscale.width, upscale.height, network)

    def run(self, requests: Sequence[GenerationRequest], report: StepReporter) -> tuple[list[Image.Image], str]:
        """Each picture upscaled in turn, one progress bar over all their tiles."""
        upscales = [_upscale_of(request) for request in requests]
        total = sum(self.upscaler.units(upscale.width, upscale.height) for upscale in upscales)
        done, images = 0, []
        for request, upscale in zip(requests, upscales, strict=True):

            def on_progress(step: int, _: int, before: int = done) -> None:
                report.step(before + step, total)

            picture = request.init_image.crop((0, 0, upscale.width, upscale.height))  # type: ignore[union-attr]
            images.append(
                self.upscaler.upscale(
                    picture, on_progress, lambda: report.cancelled, scale=upscale.scale, **self._steering(request)
                )
            )
            done += self.upscaler.units(upscale.width, upscale.height)
        return images, self.spec.kind

    def _steering(self, request: GenerationRequest) -> dict[str, Any]:
        return {}


class NetworkUpscaling(Upscaling):
    """A super-resolution network through spandrel (Real-ESRGAN, SwinIR, HAT, …): no prompt, no seed."""

    kinds = ("spandrel",)


class DiffusionUpscaling(Upscaling):
    """diffusers' SD x4 upscaler: steered by the picture's own prompts (its parameters; none: no prompt) and seed."""

    kinds = ("sd-x4",)

    def _steering(self, request: GenerationRequest) -> dict[str, Any]:
        prompt, negative = own_prompt(_upscale_of(request).parameters)  # the job's title is not a prompt
        return {"prompt": prompt, "negative_prompt": negative, "seed": request.seed}


def _upscaler_spec(spec: ModelSpec) -> UpscalerSpec:
    if not isinstance(spec, UpscalerModel) or spec.upscaler is None:
        raise ModelUnavailable(f"'{spec.name}' is not configured as an upscaler ([[upscalers]]).")
    return spec.upscaler


def _upscale_of(request: GenerationRequest) -> Upscale:
    if request.upscale is None or request.init_image is None:
        raise InvalidRequest(f"The request on '{request.model}' is not an upscale of a picture.")
    return request.upscale
