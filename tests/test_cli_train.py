"""`imagine-bot train`, run as a user would in a subprocess: a LoRA diffusers loads, resuming after a kill,
and refusals that say in one line what was wrong."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image, ImageDraw

from tests.support.threads import ONE_THREAD, one_torch_thread
from tests.test_cli import imagine_bot as run_cli


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The same for this process's own rendering."""
    with one_torch_thread():
        yield


def imagine_bot(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`imagine-bot ARGS` in a subprocess, offline, on one CPU thread."""
    return run_cli(*args, cwd=cwd, env=ONE_THREAD)


def write_photos(directory: Path, count: int = 4) -> list[str]:
    """Coloured discs as JPEG files, as a phone would send them."""
    paths = []
    for i in range(count):
        photo = Image.new("RGB", (80, 64), (255, 255, 255))
        ImageDraw.Draw(photo).ellipse((10 + 3 * i, 8, 50 + 3 * i, 48), fill=(200, 30 + 40 * i, 40))
        path = directory / f"photo{i}.jpg"
        photo.save(path)
        paths.append(str(path))
    return paths


def train_args(model: Path, photos: list[str], *extra: str, name: str = "Rex") -> list[str]:
    return [
        "train",
        *photos,
        "--model",
        str(model),
        "--name",
        name,
        "--token",
        "sks",
        "--class-word",
        "ball",
        "--resolution",
        "64",
        *extra,
    ]


def render(pipe: StableDiffusionPipeline) -> np.ndarray:
    """A fixed-seed float image."""
    generator = torch.Generator("cpu").manual_seed(1)
    return pipe(
        "a photo of sks ball", num_inference_steps=3, height=64, width=64, generator=generator, output_type="np"
    ).images[0]


def test_train_writes_a_lora_and_its_row_then_refuses_the_name_again(tmp_path: Path, tiny_sd_dir: Path) -> None:
    photos = write_photos(tmp_path)
    result = imagine_bot(*train_args(tiny_sd_dir, photos, "--steps", "30", "--chunk", "10"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (printed,) = result.stdout.splitlines()
    lora = Path(printed)
    assert lora.is_file() and lora.is_absolute() and lora.suffix == ".safetensors"
    assert "training Rex: 100%" in result.stderr and "30/30" in result.stderr and "loss=" in result.stderr

    with sqlite3.connect(tmp_path / "data" / "imagine.sqlite3") as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM loras").fetchone()
        training = db.execute("SELECT * FROM trainings").fetchone()
    assert (row["name"], row["trigger_token"], row["kind"], row["owner_id"]) == ("Rex", "sks", "sd", 0)
    assert row["sha256"] == hashlib.sha256(lora.read_bytes()).hexdigest()
    assert (training["status"], training["steps_done"], training["lora_id"]) == ("done", 30, row["id"])
    assert training["checkpoint_path"] is None and len(json.loads(training["photos"])) == 4

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    pipe.set_progress_bar_config(disable=True)
    base = render(pipe)
    pipe.load_lora_weights(str(lora), adapter_name="rex")
    assert np.abs(render(pipe) - base).max() > 1e-3

    # `generate --lora NAME` finds the trained LoRA in the store by name; weight 0 is the base model.
    made = {}
    for weight in ("1", "0"):
        out = tmp_path / f"out-{weight}"
        generated = imagine_bot(
            "generate",
            "a photo of sks ball",
            "--model",
            str(tiny_sd_dir),
            "--lora",
            f"Rex:{weight}",
            "--seed",
            "1",
            "--steps",
            "3",
            "--size",
            "64x64",
            "--out",
            str(out),
            cwd=tmp_path,
        )
        assert generated.returncode == 0, generated.stderr
        made[weight] = np.asarray(Image.open(generated.stdout.split()[0]).convert("RGB"), dtype=np.int16)
        assert "<lora:Rex:" in Image.open(generated.stdout.split()[0]).info["parameters"]
    plain = tmp_path / "out-plain"
    generated = imagine_bot(
        "generate",
        "a photo of sks ball",
        "--model",
        str(tiny_sd_dir),
        "--seed",
        "1",
        "--steps",
        "3",
        "--size",
        "64x64",
        "--out",
        str(plain),
        cwd=tmp_path,
    )
    base_png = np.asarray(Image.open(generated.stdout.split()[0]).convert("RGB"), dtype=np.int16)
    assert np.array_equal(made["0"], base_png) and np.abs(made["1"] - base_png).max() > 0

    again = imagine_bot(*train_args(tiny_sd_dir, photos, "--steps", "5"), cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == ["imagine-bot: a LoRA named 'Rex' already exists: pick another --name."]


def test_a_killed_training_resumes_from_its_last_chunk(tmp_path: Path, tiny_sd_dir: Path) -> None:
    photos = write_photos(tmp_path)
    args = train_args(tiny_sd_dir, photos, "--steps", "100", "--chunk", "5")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **ONE_THREAD}
    checkpoint = tmp_path / "data" / "images" / "trainings" / "1" / "checkpoint.pt"
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the training finished before it could be killed"

    resumed = imagine_bot(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "imagine-bot: resuming training #1 from step " in resumed.stderr
    step = int(resumed.stderr.split("from step ")[1].split()[0])
    assert 5 <= step < 100 and step % 5 == 0
    assert Path(resumed.stdout.strip()).is_file()
    with sqlite3.connect(tmp_path / "data" / "imagine.sqlite3") as db:
        assert db.execute("SELECT status, attempts FROM trainings").fetchall() == [("done", 2)]
        assert db.execute("SELECT count(*) FROM loras").fetchone() == (1,)


def test_refusals_exit_2_with_one_clear_line(tmp_path: Path, tiny_sd_dir: Path) -> None:
    photos = write_photos(tmp_path)
    (tmp_path / "notes.txt").write_text("not a picture")
    cases = [
        (photos[:2], "imagine-bot: Training needs 3 to 20 photos of the subject; got 2."),
        (photos * 6, "imagine-bot: Training needs 3 to 20 photos of the subject; got 24."),
        (
            [*photos[:3], str(tmp_path / "notes.txt")],
            "imagine-bot: The photo notes.txt is not a picture we can read: send PNG, JPEG, WebP, GIF or AVIF.",
        ),
    ]
    for given, line in cases:
        result = imagine_bot(*train_args(tiny_sd_dir, given), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [line]
    assert not (tmp_path / "data").exists()  # refused before anything was written
