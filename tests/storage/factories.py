"""Builders for storage tests: requests, generated images and a clock we can move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from PIL import Image

from generation.request import GenerationRequest, Mode
from generation.results import GeneratedImage


def txt2img(prompt: str = "a red fox in the snow", **changes: object) -> GenerationRequest:
    """A small valid text-to-image request."""
    fields: dict[str, object] = {
        "prompt": prompt,
        "model": "tiny-sd",
        "width": 64,
        "height": 64,
        "steps": 4,
        "guidance": 7.5,
        "seed": 42,
    }
    fields.update(changes)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def gradient(width: int = 64, height: int = 64) -> Image.Image:
    """An RGB image whose every pixel differs, so a lossy round trip would show."""
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 4 % 256, y * 4 % 256, (x * y) % 256) for y in range(height) for x in range(width)])
    return image


def circle_mask(width: int = 64, height: int = 64) -> Image.Image:
    """A single-channel mask, white inside a circle."""
    mask = Image.new("L", (width, height), 0)
    cx, cy, r = width // 2, height // 2, min(width, height) // 3
    mask.putdata([255 if (x - cx) ** 2 + (y - cy) ** 2 <= r * r else 0 for y in range(height) for x in range(width)])
    return mask


def inpaint(prompt: str = "a hat on the fox") -> GenerationRequest:
    """A valid inpainting request with an image and a mask."""
    return txt2img(prompt, mode=Mode.INPAINT, init_image=gradient(), mask=circle_mask(), strength=0.6)


def generated(index: int = 0, seed: int = 1, color: tuple[int, int, int] = (10, 20, 30)) -> GeneratedImage:
    """An engine result as the worker would hand it to the store."""
    image = Image.new("RGB", (64, 64), color)
    return GeneratedImage(image=image, seed=seed, index=index, parameters=f"test\nSeed: {seed}")


class FakeClock:
    """A clock tests move by hand; starts just before a UTC midnight."""

    def __init__(self, start: datetime = datetime(2025, 3, 1, 23, 59, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        """Move time forward."""
        self.now += timedelta(**delta)
