"""Zoom Out and Pan, as Midjourney has them: a bigger canvas with the picture in it and its new border as the mask.

Pure PIL and numpy, no torch: the bot builds the canvas in a worker thread, and the inpainting pipeline fills
the border with the picture's own prompt and seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

ZOOMS = {"zoomhalf": 1.5, "zoomdouble": 2.0}  # button action → how much bigger the canvas gets
PANS = {"panleft": (-1, 0), "panright": (1, 0), "panup": (0, -1), "pandown": (0, 1)}
PAN_GROWTH = 1.5  # a pan adds half the picture's width (or height) on that side
# The mask reaches this far into the picture on its new sides, so the pipeline blends the seam.
SEAM_OVERLAP = 8


@dataclass(frozen=True)
class Canvas:
    """The grown picture (new border filled from the picture's edges), the mask (white = paint), and where the
    picture sits in it (left, top, width, height)."""

    image: Image.Image
    mask: Image.Image
    placed: tuple[int, int, int, int]


def _fit(width: float, height: float, multiple: int, max_pixels: int) -> tuple[int, int]:
    """A canvas size in multiples of `multiple` within `max_pixels` (shrunk in proportion when over)."""
    shrink = min(1.0, math.sqrt(max_pixels / (width * height)))
    return (
        max(multiple, int(width * shrink) // multiple * multiple),
        max(multiple, int(height * shrink) // multiple * multiple),
    )


def _grow(image: Image.Image, width: int, height: int, left: int, top: int, scale: float) -> Canvas:
    inner_w, inner_h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    left, top = min(left, width - inner_w), min(top, height - inner_h)
    inner = image if (inner_w, inner_h) == image.size else image.resize((inner_w, inner_h), Image.Resampling.LANCZOS)
    # Edge pixels stretched outward: a neutral start for the border (inpainting at strength 1 repaints it anyway).
    pixels = np.asarray(inner.convert("RGB"))
    padded = np.pad(pixels, ((top, height - top - inner_h), (left, width - left - inner_w), (0, 0)), mode="edge")
    mask = np.full((height, width), 255, np.uint8)
    keep = [top, top + inner_h, left, left + inner_w]
    # Into the picture by SEAM_OVERLAP only on sides that grew.
    if top > 0:
        keep[0] += SEAM_OVERLAP
    if top + inner_h < height:
        keep[1] -= SEAM_OVERLAP
    if left > 0:
        keep[2] += SEAM_OVERLAP
    if left + inner_w < width:
        keep[3] -= SEAM_OVERLAP
    mask[keep[0] : max(keep[0], keep[1]), keep[2] : max(keep[2], keep[3])] = 0
    return Canvas(Image.fromarray(padded, "RGB"), Image.fromarray(mask, "L"), (left, top, inner_w, inner_h))


def zoom_out(image: Image.Image, factor: float, multiple: int, max_pixels: int) -> Canvas:
    """The picture in the middle of a canvas `factor` times its size (smaller if over `max_pixels`)."""
    if factor <= 1:
        raise ValueError(f"a zoom out factor must be above 1, not {factor}")
    width, height = _fit(image.width * factor, image.height * factor, multiple, max_pixels)
    scale = min(width / (image.width * factor), height / (image.height * factor))  # the picture, in proportion
    inner_w, inner_h = round(image.width * scale), round(image.height * scale)
    return _grow(image, width, height, (width - inner_w) // 2, (height - inner_h) // 2, scale)


def pan(image: Image.Image, direction: tuple[int, int], multiple: int, max_pixels: int) -> Canvas:
    """The picture against one side of a canvas half as long again the other way (smaller if over `max_pixels`)."""
    dx, dy = direction
    if abs(dx) + abs(dy) != 1:
        raise ValueError(f"a pan goes one way: left, right, up or down, not {direction}")
    grown_w = image.width * (PAN_GROWTH if dx else 1)
    grown_h = image.height * (PAN_GROWTH if dy else 1)
    width, height = _fit(grown_w, grown_h, multiple, max_pixels)
    scale = min(width / grown_w, height / grown_h)
    inner_w, inner_h = round(image.width * scale), round(image.height * scale)
    left = width - inner_w if dx < 0 else 0 if dx > 0 else (width - inner_w) // 2
    top = height - inner_h if dy < 0 else 0 if dy > 0 else (height - inner_h) // 2
    return _grow(image, width, height, left, top, scale)


def keep_unmasked(painted: Image.Image, original: Image.Image, mask: Image.Image) -> Image.Image:
    """The painted picture with the original's pixels back where the mask is black (the seam softened over
    SEAM_OVERLAP / 2 pixels, inside the band the mask reaches into the picture); sizes follow `painted`."""
    size = painted.size
    original = original.convert("RGB").resize(size, Image.Resampling.LANCZOS) if original.size != size else original
    mask = mask.convert("L").resize(size, Image.Resampling.NEAREST) if mask.size != size else mask.convert("L")
    soft = mask.filter(ImageFilter.GaussianBlur(SEAM_OVERLAP / 4)) if SEAM_OVERLAP else mask
    return Image.composite(painted.convert("RGB"), original.convert("RGB"), soft)
