"""`imagine-bot tiny-model --kind kandinsky|karlo` then `generate`, run in subprocesses, against raw diffusers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline
from PIL import Image
from sd_parsers import ParserManager

from generation.tiny import write_tiny_model
from tests.support.unclip import raw_unclip
from tests.test_cli import imagine_bot

PROMPT = "a sign that says hello"


def _raw(kind: str, model: Path) -> Image.Image:
    """What diffusers makes called directly with the settings `generate` uses for the kind (KIND_DEFAULTS)."""
    generator = torch.Generator("cpu").manual_seed(7)
    if kind == "kandinsky":  # guidance 4; the prior's own 25 steps at guidance 4; one generator, prior first
        prior = KandinskyV22PriorPipeline.from_pretrained(model / "prior")
        embeds, negative = prior(PROMPT, generator=generator, num_inference_steps=25, guidance_scale=4.0).to_tuple()
        decoder = KandinskyV22Pipeline.from_pretrained(model)
        return decoder(
            image_embeds=embeds,
            negative_image_embeds=negative,
            generator=generator,
            num_inference_steps=4,
            guidance_scale=4.0,
            height=64,
            width=64,
        ).images[0]
    # Karlo: decoder guidance 8, the prior's 25 steps at 4 and 7 super-resolution steps (diffusers' defaults).
    return raw_unclip(model)(PROMPT, generator=generator, decoder_num_inference_steps=4).images[0]


@pytest.mark.parametrize(
    ("kind", "size", "cfg", "sampler"),
    [("kandinsky", "64x64", "4", "DDPMScheduler"), ("karlo", "256x256", "8", "UnCLIPScheduler")],
)
def test_tiny_model_then_generate_matches_raw_diffusers(
    tmp_path: Path, kind: str, size: str, cfg: str, sampler: str
) -> None:
    model, out = tmp_path / "M", tmp_path / "O"
    made = imagine_bot("tiny-model", str(model), "--kind", kind, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    arguments = ["--seed", "7", "--steps", "4", "--out", str(out)]
    if kind == "kandinsky":
        arguments += ["--size", size]  # the kind's 768x768 default is slow on CPU; Karlo has one size
    result = imagine_bot("generate", PROMPT, "--model", str(model), *arguments, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (written,) = [Path(line) for line in result.stdout.splitlines()]
    assert written.parent == out and written.is_file()
    assert "job 1: 100%" in result.stderr  # one bar over the prior and the decoders

    with Image.open(written) as image:
        info = ParserManager().parse(image)
        ours = np.asarray(image.convert("RGB"))
        parameters = image.info["parameters"]
    assert info.full_prompt == PROMPT
    assert info.samplers[0].name == sampler
    assert info.samplers[0].parameters == {"cfg_scale": cfg, "seed": "7", "steps": "4"}
    assert info.metadata["Size"] == size and "Model: M" in parameters
    assert np.array_equal(ours, np.asarray(_raw(kind, model)))  # detected from model_index.json, the kind's defaults


def test_generate_explains_what_each_model_cannot_do(tmp_path: Path) -> None:
    kandinsky, karlo = write_tiny_model(tmp_path / "K", "kandinsky"), write_tiny_model(tmp_path / "U", "karlo")
    off_grid = imagine_bot("generate", "x", "--model", str(kandinsky), "--size", "96x64", cwd=tmp_path)
    assert off_grid.returncode == 1
    assert "The model 'K' needs a width and height that are multiples of 64, not 96x64" in off_grid.stderr
    sized = imagine_bot("generate", "x", "--model", str(karlo), "--size", "512x512", cwd=tmp_path)
    assert sized.returncode == 1 and "The model 'U' makes 256x256 pictures only" in sized.stderr
    negative = imagine_bot("generate", "x", "--model", str(karlo), "--negative", "blurry", cwd=tmp_path)
    assert negative.returncode == 1 and "The model 'U' cannot use a negative prompt" in negative.stderr
