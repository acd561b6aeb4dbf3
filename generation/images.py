"""Safe decoding of uploaded images and masks, and fitting them to a model's size rules.

Uploads are untrusted: sizes are checked from the header before pixels are decoded, so a
decompression bomb is refused without allocating it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from generation.errors import InvalidRequest
from generation.request import MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "AVIF")
ACCEPTED_TEXT = "PNG, JPEG, WebP, GIF or AVIF"


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on uploaded files, checked before decoding."""

    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 32


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class PreparedInputs:
    """An init image (RGB) and optional mask (L, 0 or 255), both exactly width x height."""

    image: Image.Image
    mask: Image.Image | None
    width: int
    height: int


def _sniff(data: bytes) -> str | None:
    head = data[:1024].lstrip()
    if head.startswith(b"<") and b"<svg" in head.lower():
        return "an SVG drawing"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1"):
        return "a HEIC photo"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    return None


def decode_image(data: bytes, what: str = "image", limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode an upload: first frame, EXIF orientation applied, size-checked before decoding."""
    if not data:
        raise InvalidRequest(f"The {what} is empty (0 bytes).")
    if len(data) > limits.max_bytes:
        raise InvalidRequest(
            f"The {what} is {len(data) / 2**20:.1f} MB; the limit is {limits.max_bytes / 2**20:.0f} MB."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequest(
            f"The {what} has too many pixels; the limit is {limits.max_pixels / 1e6:.0f} megapixels."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        kind = _sniff(data)
        found = f"is {kind}, which is not supported" if kind else "is not a picture we can read"
        raise InvalidRequest(f"The {what} {found}: send {ACCEPTED_TEXT}.") from None
    if image.format not in ACCEPTED_FORMATS:
        raise InvalidRequest(f"The {what} is a {image.format} file: send {ACCEPTED_TEXT}.")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise InvalidRequest(
            f"The {what} is {width}x{height} ({width * height / 1e6:.0f} megapixels); "
            f"the limit is {limits.max_pixels / 1e6:.0f} megapixels."
        )
    if min(width, height) < limits.min_side:
        raise InvalidRequest(f"The {what} is {width}x{height}; each side must be at least {limits.min_side} pixels.")
    try:
        image.seek(0)  # animations: the first frame
        image.load()
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError):
        raise InvalidRequest(f"The {what} is damaged or cut off and could not be read.") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels from any mode: 16-bit scaled down, transparency composited over white."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if values.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(values * scale, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def to_mask(image: Image.Image) -> Image.Image:
    """A binary L mask (255 = repaint) from a black-and-white picture; refuses colour pictures."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")  # transparent areas count as black: keep them
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    rgb = np.asarray(to_rgb(image), dtype=np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    if (spread > 48).mean() > 0.01:
        raise InvalidRequest(
            "The mask is in colour: it must be black and white, white where the picture should change."
        )
    grey = rgb.mean(axis=2)
    return Image.fromarray(np.where(grey >= 128, 255, 0).astype(np.uint8), "L")


def _round_side(value: float, multiple: int) -> int:
    side = round(value / multiple) * multiple
    return max(MIN_SIDE, min(MAX_SIDE // multiple * multiple, side))


def size_for_image(width: int, height: int, target_pixels: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """A size with the picture's aspect ratio, about target_pixels, sides multiples of `multiple` (8 by default)."""
    scale = (target_pixels / (width * height)) ** 0.5
    return _round_side(width * scale, multiple), _round_side(height * scale, multiple)


def _aspect_close(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(a[0] / a[1] - b[0] / b[1]) <= 0.02 * (b[0] / b[1])


def prepare_inputs(
    image_data: bytes,
    mask_data: bytes | None,
    *,
    size: tuple[int, int] | None,
    target_pixels: int,
    limits: ImageLimits = DEFAULT_LIMITS,
    multiple: int = SIZE_MULTIPLE,
) -> PreparedInputs:
    """Decode an init image (and mask), choose the output size, and fit both to it."""
    image = to_rgb(decode_image(image_data, "image", limits))
    width, height = size or size_for_image(image.width, image.height, target_pixels, multiple)
    mask = None
    if mask_data is not None:
        raw_mask = decode_image(mask_data, "mask", limits)
        if not _aspect_close(raw_mask.size, image.size):
            raise InvalidRequest(
                f"The mask is {raw_mask.width}x{raw_mask.height} but the image is "
                f"{image.width}x{image.height}: the mask must have the same shape as the image."
            )
        mask = to_mask(raw_mask)
        mask = ImageOps.fit(mask, (width, height), Image.Resampling.NEAREST)
        coverage = np.asarray(mask).mean() / 255
        if coverage == 0:
            raise InvalidRequest("The mask is all black, so nothing would change: paint white where it should.")
        if coverage == 1:
            raise InvalidRequest(
                "The mask is all white, so the whole picture would be replaced: paint white only where "
                "it should change, or leave out the mask."
            )
    fitted = ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    return PreparedInputs(image=fitted, mask=mask, width=width, height=height)
