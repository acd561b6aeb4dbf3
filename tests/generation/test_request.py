"""Request validation: every refusal names the rule and the value."""

from __future__ import annotations

import pytest
from PIL import Image

from generation.errors import InvalidRequest
from generation.options import UserOptions, make_request, parse_size
from generation.request import Mode
from generation.specs import ModelSpec
from tests.support.requests import gradient, txt2img

SPEC = ModelSpec(name="tiny", source="unused", steps=4, guidance=7.0, width=64, height=64)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompt": "   "}, "The prompt is empty"),
        ({"prompt": "x" * 2001}, "is 2001 characters long; the limit is 2000"),
        ({"width": 500}, "width must be a multiple of 8, not 500"),
        ({"height": 4096}, "height must be between 64 and 2048 pixels, not 4096"),
        ({"steps": 0}, "Steps must be between 1 and 150, not 0"),
        ({"guidance": 31.0}, "Guidance must be between 0 and 30, not 31"),
        ({"count": 5}, "1 to 4 images at once, not 5"),
        ({"seed": -1}, "seed must be between 0 and 4294967295, not -1"),
        ({"strength": 0.0}, "Strength must be above 0 and at most 1, not 0"),
        ({"mode": Mode.IMG2IMG}, "img2img needs an image"),
        ({"mode": Mode.INPAINT, "init_image": gradient()}, "Inpainting needs a mask"),
        ({"init_image": gradient()}, "text-to-image request takes no image"),
        ({"mode": Mode.IMG2IMG, "init_image": gradient(32, 32)}, "image is 32x32 but the request is 64x64"),
        (
            {"mode": Mode.INPAINT, "init_image": gradient(), "mask": Image.new("L", (32, 32))},
            "mask is 32x32 but the image is 64x64",
        ),
    ],
)
def test_invalid_requests_are_refused(changes: dict, message: str) -> None:
    prompt = changes.pop("prompt", "a red cube")
    with pytest.raises(InvalidRequest, match=message):
        txt2img(prompt, **changes)


def test_seeds_count_up_and_cost_scales() -> None:
    request = txt2img(seed=2**32 - 1, count=3)
    assert request.seeds == [2**32 - 1, 0, 1]
    assert request.cost == 64 * 64 * 4 * 3
    assert request.with_changes(strength=0.5, mode=Mode.IMG2IMG, init_image=gradient()).cost == 64 * 64 * 2 * 3


def test_params_round_trip() -> None:
    request = txt2img(negative_prompt="blurry", sampler="Euler a", count=2)
    assert type(request).from_params(request.params()) == request


def test_model_defaults_fill_what_the_user_left_out() -> None:
    request = make_request(SPEC, UserOptions(prompt="a cube", seed=3, sampler="euler A"))
    assert (request.width, request.height, request.steps, request.guidance) == (64, 64, 4, 7.0)
    assert request.sampler == "Euler a" and request.mode is Mode.TXT2IMG


def test_unknown_sampler_and_bad_size_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="Unknown sampler 'Warp 9'. Choose one of: Euler a"):
        make_request(SPEC, UserOptions(prompt="x", sampler="Warp 9"))
    with pytest.raises(InvalidRequest, match="Size 'big' is not like 512x768 or 3:2"):
        make_request(SPEC, UserOptions(prompt="x", size="big"))
    with pytest.raises(InvalidRequest, match="A mask needs an image"):
        make_request(SPEC, UserOptions(prompt="x", mask=b"..."))


def test_aspect_ratios_keep_the_model_area() -> None:
    width, height = parse_size("16:9", 512 * 512)
    assert width % 8 == 0 and height % 8 == 0 and abs(width / height - 16 / 9) < 0.03
    assert 0.9 < width * height / (512 * 512) < 1.1
    assert parse_size("768x512", 512 * 512) == (768, 512)
