"""`imagine-bot tiny-model --kind if` then `imagine-bot generate` on it, run as a user would, in subprocesses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import IFPipeline, IFSuperResolutionPipeline
from PIL import Image
from sd_parsers import ParserManager

from tests.test_cli import imagine_bot


def test_tiny_if_model_then_generate_matches_raw_stages(tmp_path: Path) -> None:
    model, out = tmp_path / "M", tmp_path / "O"
    made = imagine_bot("tiny-model", str(model), "--kind", "if", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (model / "stage_2" / "model_index.json").is_file() and (model / "stage_3" / "model_index.json").is_file()
    prompt = "a sign that says hello"
    result = imagine_bot(
        "generate", prompt, "--model", str(model), "--seed", "7", "--steps", "4", "--out", str(out), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    (written,) = [Path(line) for line in result.stdout.splitlines()]
    assert "job 1: 100%" in result.stderr  # one bar over both stages

    with Image.open(written) as image:
        info = ParserManager().parse(image)
        ours = np.asarray(image.convert("RGB"))
    assert info.full_prompt == prompt
    assert info.samplers[0].parameters == {"cfg_scale": "7", "seed": "7", "steps": "4"}
    assert info.metadata["Size"] == "256x256"  # the picture's own size: stage II made it 4x the 64x64 request

    # Detected as IF from model_index.json: the kind's defaults (64x64, guidance 7) and stage II's guidance 4.
    stage_1 = IFPipeline.from_pretrained(model)
    stage_2 = IFSuperResolutionPipeline.from_pretrained(model / "stage_2", text_encoder=None)
    embeds, negative = stage_1.encode_prompt(prompt, clean_caption=False)
    text = {"prompt_embeds": embeds, "negative_prompt_embeds": negative, "num_inference_steps": 4}
    low = stage_1(**text, guidance_scale=7.0, generator=torch.Generator("cpu").manual_seed(7), output_type="pt").images
    raw = stage_2(image=low, **text, guidance_scale=4.0, generator=torch.Generator("cpu").manual_seed(7)).images[0]
    assert ours.shape == (256, 256, 3)
    assert np.array_equal(ours, np.asarray(raw))
