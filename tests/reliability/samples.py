"""Uploads of every awkward kind: bytes as a Discord user could attach them."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

MiB = 1024 * 1024


def encode(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def noise_png(size: tuple[int, int] = (64, 64)) -> bytes:
    """Random pixels: a PNG that does not compress, so cutting it loses real image data."""
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels, "RGB"))


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (what a decompression bomb looks like before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale: tiny when compressed
    body = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (64, 64), (0, 128, 255, 0)), "JPEG")


def png_16bit() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (64, 1))
    return encode(Image.fromarray(ramp))  # mode I;16


def palette_with_transparency() -> bytes:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (16, 16, 48, 48))
    return encode(image, transparency=0)


def exif_rotated_jpeg() -> bytes:
    """96x64 pixels stored; EXIF orientation 6 says: show it turned, 64 wide and 96 tall."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.new("RGB", (96, 64), (10, 120, 200)), "JPEG", exif=exif.tobytes())


def avif() -> bytes:
    return encode(Image.new("RGB", (64, 64), (90, 60, 200)), "AVIF")


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="9"/></svg>'
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(512)
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def grey_mask(size: tuple[int, int], value: int) -> bytes:
    return encode(Image.new("L", size, value))


def colour_mask(size: tuple[int, int] = (64, 64)) -> bytes:
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 255, 0), (0, 0, size[0] // 2, size[1]))
    return encode(image)
