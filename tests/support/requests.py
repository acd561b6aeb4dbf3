"""Small builders shared by generation tests."""

from __future__ import annotations

import numpy as np
from PIL import Image

from generation.request import GenerationRequest, Mode


def txt2img(prompt: str = "a red cube", **changes) -> GenerationRequest:
    """A small txt2img request on the tiny SD model."""
    fields = {"model": "tiny", "width": 64, "height": 64, "steps": 4, "guidance": 7.0, "seed": 7} | changes
    return GenerationRequest(prompt=prompt, **fields)


def gradient(width: int = 64, height: int = 64) -> Image.Image:
    """A deterministic RGB start picture."""
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    rgb = np.stack(
        [np.tile(x, (height, 1)), np.tile(y[:, None], (1, width)), np.full((height, width), 90, np.uint8)], 2
    )
    return Image.fromarray(rgb, "RGB")


def square_mask(width: int = 64, height: int = 64) -> Image.Image:
    """White square in the middle: repaint there."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    return mask


def img2img(prompt: str = "a blue cube", **changes) -> GenerationRequest:
    """A small img2img request from the gradient picture."""
    return txt2img(prompt, mode=Mode.IMG2IMG, init_image=gradient(), strength=0.6, **changes)


def inpaint(prompt: str = "a green cube", **changes) -> GenerationRequest:
    """A small inpainting request on the gradient picture."""
    return txt2img(prompt, mode=Mode.INPAINT, init_image=gradient(), mask=square_mask(), strength=0.9, **changes)


def pixels(image: Image.Image) -> np.ndarray:
    """Pixels as a signed array, so differences do not wrap."""
    return np.asarray(image, dtype=np.int16)
