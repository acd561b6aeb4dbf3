"""Limits on what one request and one user may ask for; servers override the defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from generation.errors import InvalidRequest
from generation.request import GenerationRequest


class LimitExceeded(InvalidRequest):
    """A request is valid but over a limit that applies to this user or server."""


@dataclass(frozen=True)
class Limits:
    """Per-request and per-user limits; 0 for a quota means none."""

    max_steps: int = 50
    max_count: int = 4
    max_pixels: int = 1024 * 1024
    max_queued_per_user: int = 5
    daily_images_per_user: int = 0
    cooldown_seconds: float = 0.0
    # Dreambooth LoRA trainings (/train): steps and photos per training, trainings per user per day.
    max_train_steps: int = 1000
    max_train_photos: int = 20
    daily_trainings_per_user: int = 2
    # Upscaling (Upscale buttons, /upscale): the largest result, width x height; tiles keep memory flat, and
    # a 2048x2048 PNG stays well under Discord's upload limit.
    max_upscaled_pixels: int = 2048 * 2048

    @classmethod
    def unlimited(cls) -> Limits:
        """No limits beyond what a request itself allows (the operator's local CLI)."""
        return cls(
            max_steps=10**6,
            max_count=10**6,
            max_pixels=10**12,
            max_queued_per_user=10**9,
            max_train_steps=10**6,
            max_train_photos=10**6,
            daily_trainings_per_user=0,
            max_upscaled_pixels=10**12,
        )

    def with_overrides(self, settings: Mapping[str, Any]) -> Limits:
        """These limits with a server's stored settings applied; unrelated keys are ignored."""
        names = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in settings.items() if k in names and v is not None})


def check_request(request: GenerationRequest, limits: Limits) -> None:
    """Refuse a request over a per-request limit, naming the limit and its value."""
    if request.steps > limits.max_steps:
        raise LimitExceeded(f"{request.steps} steps is over this server's limit of {limits.max_steps}.")
    if request.count > limits.max_count:
        raise LimitExceeded(f"{request.count} images is over this server's limit of {limits.max_count} per request.")
    pixels = request.width * request.height
    if pixels > limits.max_pixels:
        raise LimitExceeded(
            f"{request.width}x{request.height} is {pixels:,} pixels, over this server's limit of "
            f"{limits.max_pixels:,} (e.g. {_square(limits.max_pixels)})."
        )


def check_upscale(width: int, height: int, scale: int, limits: Limits) -> None:
    """Refuse upscaling a width x height picture `scale` times when the result is over the limit, naming both."""
    result_width, result_height = width * scale, height * scale
    pixels = result_width * result_height
    if pixels > limits.max_upscaled_pixels:
        raise LimitExceeded(
            f"Upscaling {width}x{height} {scale}x would make {result_width}x{result_height} ({pixels:,} pixels), "
            f"over the limit of {limits.max_upscaled_pixels:,} for upscaled pictures "
            f"(e.g. {_square(limits.max_upscaled_pixels)}): pick a smaller scale or a smaller picture."
        )


def _square(pixels: int) -> str:
    side = int(pixels**0.5) // 8 * 8
    return f"{side}x{side}"
