"""The `imagine-bot` command line, run as a user would, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from sd_parsers import ParserManager


def imagine_bot(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `imagine-bot ARGS` offline in `cwd` (where its default data/ folder goes) and capture output."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300
    )


def test_tiny_model_then_generate_matches_raw_diffusers(tmp_path: Path) -> None:
    model, out = tmp_path / "M", tmp_path / "O"
    made = imagine_bot("tiny-model", str(model), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    result = imagine_bot(
        "generate",
        "a red cube",
        "--model",
        str(model),
        "--seed",
        "7",
        "--steps",
        "4",
        "--size",
        "64x64",
        "--guidance",
        "7",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (written,) = [Path(line) for line in result.stdout.splitlines()]
    assert written.parent == out and written.is_file()
    assert "job 1: 100%" in result.stderr  # the progress bar

    with Image.open(written) as image:
        info = ParserManager().parse(image)
        ours = np.asarray(image.convert("RGB"))
    assert info.full_prompt == "a red cube"
    assert info.samplers[0].parameters == {"cfg_scale": "7", "seed": "7", "steps": "4"}
    assert info.metadata["Size"] == "64x64"

    pipe = StableDiffusionPipeline.from_pretrained(model)
    raw = pipe(
        "a red cube",
        generator=torch.Generator("cpu").manual_seed(7),
        num_inference_steps=4,
        guidance_scale=7,
        height=64,
        width=64,
    ).images[0]
    assert np.array_equal(ours, np.asarray(raw))

    listed = imagine_bot("history", "--search", "cube", cwd=tmp_path)
    assert listed.returncode == 0 and "done" in listed.stdout and "'a red cube'" in listed.stdout


def test_generate_img2img_and_inpaint_from_files(tmp_path: Path, tiny_sd_dir: Path) -> None:
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    Image.new("RGB", (80, 64), (120, 60, 30)).save(image)
    m = Image.new("L", (80, 64), 0)
    m.paste(255, (10, 10, 40, 40))
    m.save(mask)
    for extra in (["--image", str(image)], ["--image", str(image), "--mask", str(mask)]):
        result = imagine_bot(
            "generate",
            "a cube",
            "--model",
            str(tiny_sd_dir),
            "--steps",
            "3",
            "--seed",
            "1",
            "--count",
            "2",
            "--strength",
            "0.5",
            "--out",
            str(tmp_path / "o"),
            *extra,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        paths = result.stdout.split()
        assert len(paths) == 2
        with Image.open(paths[0]) as written:
            assert written.width % 8 == 0 and "Denoising strength: 0.5" in written.info["parameters"]


def test_generate_explains_unknown_models_and_bad_input(tmp_path: Path, tiny_sd_dir: Path) -> None:
    missing = imagine_bot("generate", "x", "--model", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 1
    assert "is neither a configured model" in missing.stderr and "--model DIR" in missing.stderr
    hub = imagine_bot("generate", "x", "--model", "sd15", cwd=tmp_path)
    assert hub.returncode == 1
    assert "could not be loaded from 'stable-diffusion-v1-5/stable-diffusion-v1-5'" in hub.stderr
    assert 'source = "DIR"' in hub.stderr
    bad = imagine_bot("generate", "x", "--model", str(tiny_sd_dir), "--steps", "999", cwd=tmp_path)
    assert bad.returncode == 1 and "Steps must be between 1 and 150, not 999" in bad.stderr
    unreadable = imagine_bot(
        "generate", "x", "--model", str(tiny_sd_dir), "--image", str(tmp_path / "none.png"), cwd=tmp_path
    )
    assert unreadable.returncode == 2 and "cannot read" in unreadable.stderr


def test_run_without_token_says_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "run"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2
    assert "set the environment variable DISCORD_TOKEN" in result.stderr
