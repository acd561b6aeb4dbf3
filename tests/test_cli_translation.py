"""`imagine-bot tiny-model --kind translation`, then `generate` and `history` with `[translation]`, in subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from sd_parsers import ParserManager

from tests.support.translation import raw_translation
from tests.test_cli import imagine_bot

FRENCH = "une forêt enchantée avec des champignons lumineux, peinture à l'huile"


def test_generate_translates_a_french_prompt_and_history_finds_it_by_its_english(
    tmp_path: Path, tiny_sd_dir: Path
) -> None:
    sd, marian, out = tiny_sd_dir, tmp_path / "T", tmp_path / "O"
    made = imagine_bot("tiny-model", str(marian), "--kind", "translation", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (marian / "source.spm").is_file() and (marian / "config.json").is_file()
    config = tmp_path / "config.toml"
    config.write_text('[translation]\nmodel = "./T"\nlanguages = ["fr"]\n[storage]\npath = "data/db.sqlite3"\n')
    options = ["--model", str(sd), "--seed", "7", "--steps", "4", "--size", "64x64", "--guidance", "7"]
    result = imagine_bot("generate", FRENCH, *options, "--out", str(out), "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (written,) = [Path(line) for line in result.stdout.splitlines()]

    english = raw_translation(marian, FRENCH)
    with Image.open(written) as image:
        info = ParserManager().parse(image)
        ours = np.asarray(image.convert("RGB"))
        parameters = image.info["parameters"]
    assert info.full_prompt == english and info.metadata["Translated from"] == "French"
    assert f"Original prompt: {json.dumps(FRENCH, ensure_ascii=False)}" in parameters
    pipe = StableDiffusionPipeline.from_pretrained(sd)
    generator = torch.Generator("cpu").manual_seed(7)
    raw = pipe(english, generator=generator, num_inference_steps=4, guidance_scale=7.0, height=64, width=64)
    assert np.array_equal(ours, np.asarray(raw.images[0]))

    # Found by a word only the translation has (the store's tests search by both texts).
    listed = imagine_bot("history", "--search", english.split()[0], "--config", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("#1 ") and f"translated from French: {english[:60]!r}" in listed.stdout
