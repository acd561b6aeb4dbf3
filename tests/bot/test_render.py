"""Message text and files: inert user text, progress bars, grids, and the upload size fallback."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot import render
from generation.metadata import png_bytes


def noisy_png(size: int = 512) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return png_bytes(Image.fromarray(pixels, "RGB"), "a prompt\nSteps: 4")


def test_user_text_cannot_format_or_mention() -> None:
    text = render.safe_text("@everyone **hi** <@123> " + "x" * 500, limit=40)
    assert "@\u200beveryone" in text and "\\*\\*hi\\*\\*" in text and len(text) < 60 and text.endswith("…")


def test_progress_bar() -> None:
    assert render.progress_bar(0, 20) == "`[░░░░░░░░░░░░]   0%`"
    assert render.progress_bar(10, 20) == "`[██████░░░░░░]  50%`"
    assert render.progress_bar(20, 20) == "`[████████████] 100%`"


def test_grid_is_two_by_two_for_four() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    sheet = render.grid([Image.new("RGB", (8, 8), c) for c in colours])
    assert sheet.size == (16, 16)
    assert [sheet.getpixel(p) for p in ((0, 0), (8, 0), (0, 8), (8, 8))] == colours


def test_upload_keeps_png_when_it_fits_and_shrinks_when_it_does_not() -> None:
    data = noisy_png()
    assert render.fit_upload(data, limit=len(data)) == (data, "png")
    jpeg, suffix = render.fit_upload(data, limit=len(data) // 4)
    assert suffix == "jpg" and len(jpeg) <= len(data) // 4 and Image.open(io.BytesIO(jpeg)).format == "JPEG"
    with pytest.raises(ValueError, match="cannot fit"):
        render.fit_upload(data, limit=100)
