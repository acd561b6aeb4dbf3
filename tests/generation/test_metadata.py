"""PNG `parameters` chunks read back by sd-parsers, the tool other UIs use."""

from __future__ import annotations

import io

from PIL import Image
from sd_parsers import ParserManager

from generation.metadata import png_bytes, read_parameters, upscale_parameters
from tests.support.requests import img2img, txt2img


def parse(data: bytes):
    with Image.open(io.BytesIO(data)) as image:
        return ParserManager().parse(image)


def test_parameters_round_trip_through_sd_parsers(engine) -> None:
    request = txt2img("a red cube, studio light", negative_prompt="blurry, text", sampler="Euler a", steps=5)
    (images,) = engine.generate([request])
    info = parse(images[0].png())
    (sampler,) = info.samplers
    assert info.full_prompt == "a red cube, studio light"
    assert info.full_negative_prompt == "blurry, text"
    assert sampler.name == "Euler a"
    assert sampler.parameters == {"cfg_scale": "7", "seed": "7", "steps": "5"}
    assert sampler.model.name == "tiny"
    assert info.metadata["Size"] == "64x64"


def test_img2img_records_denoising_strength_and_newlines_are_flattened(engine) -> None:
    request = img2img("two\nlines")
    (images,) = engine.generate([request])
    text = read_parameters(images[0].png())
    assert text.splitlines()[0] == "two lines"
    assert "Denoising strength: 0.6" in text
    assert parse(images[0].png()).full_prompt == "two lines"


def test_png_bytes_keep_pixels() -> None:
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    with Image.open(io.BytesIO(png_bytes(image, "x\nSteps: 1"))) as decoded:
        assert decoded.getpixel((0, 0)) == (1, 2, 3)


def test_upscaled_pictures_keep_their_parameters_at_the_new_size() -> None:
    own = "a cat\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Model: sd, Hires size: 9x9"
    text = upscale_parameters(own, "4x, UltraSharp", 4, (256, 256))
    assert text == own.replace("Size: 64x64", "Size: 256x256") + (
        ", Postprocess upscale by: 4, Postprocess upscaler: 4x  UltraSharp"
    )
    info = parse(png_bytes(Image.new("RGB", (8, 8)), text))
    assert (info.full_prompt, info.metadata["Size"], info.metadata["Postprocess upscale by"]) == (
        "a cat",
        "256x256",
        "4",
    )
    assert (
        upscale_parameters(None, "net", 2, (10, 8))
        == "Postprocess upscale by: 2, Postprocess upscaler: net, Size: 10x8"
    )
    assert upscale_parameters("a dog", "net", 2, (10, 8), creative=True) == (
        "a dog\nHires upscale: 2, Hires upscaler: net, Size: 10x8"
    )
    assert upscale_parameters("x\nSteps: 2, Seed: 1", "net", 3, (9, 9)).endswith(
        "Steps: 2, Seed: 1, Size: 9x9, Postprocess upscale by: 3, Postprocess upscaler: net"
    )
