"""Uploaded images and masks: every bad input gets a clear refusal, odd-but-valid ones are fixed up."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from generation.errors import InvalidRequest
from generation.images import ImageLimits, decode_image, prepare_inputs, to_rgb


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming huge dimensions with almost no data: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


PHOTO = Image.new("RGB", (96, 64), (200, 30, 30))
GOOD = encode(PHOTO)
MASK = Image.new("L", (96, 64), 0)
MASK.paste(255, (20, 10, 60, 50))

BAD_IMAGES = {
    "empty file": (b"", None, "is empty"),
    "not an image": (b"hello, this is a text file", None, "is not a picture we can read"),
    "truncated png": (GOOD[: len(GOOD) // 2], None, "damaged or cut off"),
    "decompression bomb": (png_header_only(30000, 30000), None, "megapixels"),
    "enormous dimensions": (png_header_only(100000, 1000), None, "megapixels"),
    "1x1 pixel": (encode(Image.new("RGB", (1, 1))), None, "at least 32 pixels"),
    "svg drawing": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', None, "SVG drawing"),
    "heic photo": (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64, None, "HEIC photo"),
    "pdf document": (b"%PDF-1.4\n%...", None, "PDF document"),
    "tiff file": (encode(PHOTO, "TIFF"), None, "is a TIFF file"),
    "over byte limit": (GOOD + b"\0" * 2048, None, "the limit is 0 MB"),
    "mask all black": (GOOD, encode(Image.new("L", (96, 64), 0)), "all black"),
    "mask all white": (GOOD, encode(Image.new("L", (96, 64), 255)), "all white"),
    "mask in colour": (GOOD, encode(Image.new("RGB", (96, 64), (250, 20, 20))), "in colour"),
    "mask wrong shape": (GOOD, encode(Image.new("L", (64, 64), 255)), "same shape as the image"),
    "mask not an image": (GOOD, b"nope", "The mask is not a picture"),
}


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_bad_input_is_refused_clearly(name: str) -> None:
    image, mask, expected = BAD_IMAGES[name]
    limits = ImageLimits(max_bytes=len(GOOD) + 1024) if name == "over byte limit" else ImageLimits()
    with pytest.raises(InvalidRequest, match=expected):
        prepare_inputs(image, mask, size=None, target_pixels=64 * 64, limits=limits)


def test_refusals_name_the_limit() -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_image(png_header_only(3000, 2000), limits=ImageLimits(max_pixels=1_000_000))
    assert str(info.value) == "The image is 3000x2000 (6 megapixels); the limit is 1 megapixels."
    with pytest.raises(InvalidRequest) as info:  # past Pillow's own bomb guard: refused before decoding
        decode_image(png_header_only(30000, 30000), limits=ImageLimits(max_pixels=1_000_000))
    assert str(info.value) == "The image has too many pixels; the limit is 1 megapixels."


def test_exif_orientation_is_applied() -> None:
    tall = Image.new("RGB", (40, 80), (0, 0, 0))
    tall.paste((255, 255, 255), (0, 0, 40, 10))  # white band at the top
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90° clockwise
    data = encode(tall, "JPEG", exif=exif, quality=95)
    image = to_rgb(decode_image(data))
    assert image.size == (80, 40)
    assert np.asarray(image)[:, -5:].mean() > 200  # the band now on the right


def test_animation_uses_first_frame() -> None:
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    red, _, blue = to_rgb(decode_image(data)).getpixel((5, 5))
    assert red > 200 and blue < 50


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("CMYK", (64, 64), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.fromarray(np.full((64, 64), 65535, np.uint16)), (255, 255, 255)),
        (Image.new("RGBA", (64, 64), (0, 0, 0, 0)), (255, 255, 255)),  # transparent → white
        (Image.new("LA", (64, 64), (0, 255)), (0, 0, 0)),
    ],
    ids=["cmyk", "16-bit grey", "transparent rgba", "grey with alpha"],
)
def test_modes_are_converted_to_rgb(image: Image.Image, expected: tuple[int, int, int]) -> None:
    fmt = "JPEG" if image.mode == "CMYK" else "PNG"
    converted = to_rgb(decode_image(encode(image, fmt)))
    assert converted.mode == "RGB"
    assert np.allclose(converted.getpixel((3, 3)), expected, atol=3)


def test_palette_with_transparency() -> None:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    data = encode(image, transparency=0)
    assert to_rgb(decode_image(data)).getpixel((0, 0)) == (255, 255, 255)


def test_inputs_are_fitted_to_multiples_of_eight_with_binary_mask() -> None:
    soft_mask = MASK.resize((96, 64)).convert("RGB")
    prepared = prepare_inputs(GOOD, encode(soft_mask, "JPEG"), size=None, target_pixels=512 * 512)
    assert prepared.width % 8 == 0 and prepared.height % 8 == 0
    assert abs(prepared.width / prepared.height - 1.5) < 0.05
    assert prepared.image.size == prepared.mask.size == (prepared.width, prepared.height)
    assert set(np.unique(np.asarray(prepared.mask))) == {0, 255}


def test_explicit_size_crops_to_fit() -> None:
    prepared = prepare_inputs(GOOD, encode(MASK), size=(64, 64), target_pixels=512 * 512)
    assert prepared.image.size == prepared.mask.size == (64, 64)
