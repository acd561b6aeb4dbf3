"""Zoom Out and Pan canvases: sizes, where the picture sits, and the mask around it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from generation.outpaint import PANS, SEAM_OVERLAP, pan, zoom_out
from tests.support.requests import gradient


@pytest.mark.parametrize(
    ("factor", "size", "placed"), [(2.0, (128, 96), (32, 24, 64, 48)), (1.5, (96, 72), (16, 12, 64, 48))]
)
def test_zoom_out_centres_the_picture_on_a_bigger_canvas(factor, size, placed) -> None:
    picture = gradient(64, 48)
    canvas = zoom_out(picture, factor, 8, 10**6)
    assert canvas.image.size == canvas.mask.size == size and canvas.placed == placed
    left, top, width, height = placed
    inside = np.asarray(canvas.image)[top : top + height, left : left + width]
    assert np.array_equal(inside, np.asarray(picture))  # the picture itself, untouched
    mask = np.asarray(canvas.mask)
    assert mask[0, 0] == 255 and mask[top + height // 2, left + width // 2] == 0
    assert mask[top + SEAM_OVERLAP, left + SEAM_OVERLAP] == 0 and mask[top + SEAM_OVERLAP - 1, left + width // 2] == 255


PAN_CASES = [
    ("panleft", (96, 48), (32, 0)),
    ("panright", (96, 48), (0, 0)),
    ("panup", (64, 72), (0, 24)),
    ("pandown", (64, 72), (0, 0)),
]


@pytest.mark.parametrize(("action", "size", "corner"), PAN_CASES)
def test_pan_grows_one_side_by_half(action, size, corner) -> None:
    canvas = pan(gradient(64, 48), PANS[action], 8, 10**6)
    assert canvas.image.size == size and canvas.placed[:2] == corner
    mask = np.asarray(canvas.mask)
    assert mask.mean() > 0 and (mask == 0).any()


def test_a_canvas_over_the_pixel_limit_shrinks_the_picture_instead() -> None:
    canvas = zoom_out(Image.new("RGB", (1024, 1024)), 2.0, 8, 1024 * 1024)
    assert canvas.image.size == (1024, 1024) and canvas.placed == (256, 256, 512, 512)
    assert pan(Image.new("RGB", (1024, 1024)), PANS["panright"], 8, 1024 * 1024).image.size[0] % 8 == 0


def test_a_zoom_in_or_a_diagonal_pan_is_refused() -> None:
    with pytest.raises(ValueError):
        zoom_out(gradient(), 1.0, 8, 10**6)
    with pytest.raises(ValueError):
        pan(gradient(), (1, 1), 8, 10**6)


def test_the_engine_keeps_the_picture_outside_the_mask_only_when_asked(engine) -> None:
    from generation.request import GenerationRequest

    canvas = zoom_out(gradient(), 2.0, 8, 10**6)
    fields = {"prompt": "a red cube", "model": "tiny", "width": 128, "height": 128, "steps": 2, "guidance": 7.0}
    fields |= {"seed": 7, "mode": "inpaint", "strength": 1.0, "init_image": canvas.image, "mask": canvas.mask}
    plain = np.asarray(engine.generate([GenerationRequest(**fields)])[0][0].image, dtype=np.int16)
    kept = np.asarray(engine.generate([GenerationRequest(**fields, keep_unmasked=True)])[0][0].image, dtype=np.int16)
    source = np.asarray(gradient(), dtype=np.int16)
    assert np.array_equal(kept[48:80, 48:80], source[16:48, 16:48])  # the picture, exactly
    assert np.array_equal(kept[:24], plain[:24])  # the border is what the pipeline painted
    assert not np.array_equal(plain[48:80, 48:80], source[16:48, 16:48])  # diffusers alone does not keep it
