"""`imagine-bot tiny-model --kind flux|sd3` then `imagine-bot generate`, in subprocesses, against raw diffusers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline
from PIL import Image
from sd_parsers import ParserManager

from tests.test_cli import imagine_bot

PROMPT = "a sign that says hello"


def _raw(kind: str, model: Path) -> Image.Image:
    """What diffusers makes called directly with the settings `generate` uses for the kind."""
    common = {"generator": torch.Generator("cpu").manual_seed(7), "num_inference_steps": 4, "height": 64, "width": 64}
    if kind == "flux":  # KIND_DEFAULTS: schnell's guidance 0; the family reads 256 T5 tokens for schnell
        pipe = FluxPipeline.from_pretrained(model)
        return pipe(PROMPT, guidance_scale=0.0, max_sequence_length=256, **common).images[0]
    pipe = StableDiffusion3Pipeline.from_pretrained(model)  # KIND_DEFAULTS: guidance 7, diffusers' 256 tokens
    return pipe(PROMPT, guidance_scale=7.0, **common).images[0]


@pytest.mark.parametrize(("kind", "cfg"), [("flux", "0"), ("sd3", "7")])
def test_tiny_model_then_generate_matches_raw_diffusers(tmp_path: Path, kind: str, cfg: str) -> None:
    model, out = tmp_path / "M", tmp_path / "O"
    made = imagine_bot("tiny-model", str(model), "--kind", kind, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    result = imagine_bot(
        "generate",
        PROMPT,
        "--model",
        str(model),
        "--seed",
        "7",
        "--steps",
        "4",
        "--size",
        "64x64",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (written,) = [Path(line) for line in result.stdout.splitlines()]
    assert written.parent == out and written.is_file()

    with Image.open(written) as image:
        info = ParserManager().parse(image)
        ours = np.asarray(image.convert("RGB"))
        parameters = image.info["parameters"]
    assert info.full_prompt == PROMPT
    assert info.samplers[0].name == "FlowMatchEulerDiscreteScheduler"
    assert info.samplers[0].parameters == {"cfg_scale": cfg, "seed": "7", "steps": "4"}
    assert info.metadata["Size"] == "64x64" and "Model: M" in parameters
    assert np.array_equal(ours, np.asarray(_raw(kind, model)))


def test_generate_explains_the_flux_size_rule(tmp_path: Path) -> None:
    model = tmp_path / "M"
    assert imagine_bot("tiny-model", str(model), "--kind", "flux", cwd=tmp_path).returncode == 0
    result = imagine_bot("generate", "x", "--model", str(model), "--size", "72x64", cwd=tmp_path)
    assert result.returncode == 1
    assert "The model 'M' needs a width and height that are multiples of 16" in result.stderr
    assert "not 72x64" in result.stderr
