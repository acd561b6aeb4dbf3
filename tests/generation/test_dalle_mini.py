"""The DALL·E Mini/Mega family against min-dalle's own loop, on a tiny random-weight model in min-dalle's layout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from generation.catalog import family_for
from generation.engine import Engine
from generation.errors import Cancelled, InvalidRequest, ModelUnavailable
from generation.families.base import StepReporter
from generation.families.dalle_layout import MEGA, MINI, detect_kind, sizes_for, weight_paths
from generation.families.dalle_mini import DalleMini
from generation.families.loading import check_source
from generation.request import Mode
from generation.results import StepProgress
from generation.specs import KIND_DEFAULTS, ModelSpec
from generation.tiny import write_tiny_model
from tests.support.min_dalle import min_dalle_image
from tests.support.requests import gradient, pixels, txt2img
from tests.support.threads import ONE_THREAD, one_torch_thread

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models on one thread (tests/support/threads.py says why)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def tiny_dalle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DALL·E Mini as `imagine-bot tiny-model --kind dalle-mini` writes it."""
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-dalle", "dalle-mini")


def _spec(source: Path, name: str = "mini", kind: str = "dalle-mini") -> ModelSpec:
    defaults = KIND_DEFAULTS[kind]
    return ModelSpec(
        name=name,
        source=str(source),
        kind=kind,  # type: ignore[arg-type]
        steps=defaults.steps,
        guidance=defaults.guidance,
        width=defaults.width,
        height=defaults.height,
    )


@pytest.fixture(scope="module")
def dalle_engine(tiny_dalle_dir: Path) -> Engine:
    return Engine({"mini": _spec(tiny_dalle_dir)}, device="cpu", preview_every=2)


def mini(prompt: str = "a red cube", **changes):
    """A request for the tiny DALL·E Mini with the kind's defaults (256x256, 16 rows, guidance 16)."""
    fields = {"model": "mini", "width": 256, "height": 256, "steps": 16, "guidance": 16.0} | changes
    return txt2img(prompt, **fields)


def test_txt2img_equals_min_dalles_own_loop_with_a_step_per_token_row(
    dalle_engine: Engine, tiny_dalle_dir: Path
) -> None:
    events: list[StepProgress] = []
    (ours,) = dalle_engine.generate([mini(seed=7)], on_progress=events.append)
    raw = min_dalle_image(tiny_dalle_dir, "a red cube", seed=7)
    assert np.array_equal(pixels(ours[0].image), pixels(raw))
    assert ours[0].image.size == (256, 256)
    assert "Steps: 16, Sampler: min-dalle top-k 256, CFG scale: 16, Seed: 7, Size: 256x256" in ours[0].parameters
    assert [e.step for e in events] == list(range(1, 17)) and all(e.total == 16 for e in events)
    assert all(e.previews is None for e in events)  # a partial picture costs a whole VQGAN decode: none


def test_guidance_is_min_dalles_supercondition_factor(dalle_engine: Engine, tiny_dalle_dir: Path) -> None:
    (ours,) = dalle_engine.generate([mini("a blue ship", seed=3, guidance=4.0)])
    assert np.array_equal(pixels(ours[0].image), pixels(min_dalle_image(tiny_dalle_dir, "a blue ship", 3, 4)))
    loaded, quiet = dalle_engine.load("mini"), StepReporter(None, None, 0)
    weak = loaded.image_tokens([mini("a blue ship", seed=3, guidance=4.0)], quiet)
    assert not torch.equal(weak, loaded.image_tokens([mini("a blue ship", seed=3)], quiet))  # it reached the model


def test_a_batch_draws_each_image_as_it_is_drawn_alone(dalle_engine: Engine) -> None:
    loaded = dalle_engine.load("mini")
    quiet = StepReporter(None, None, 0)
    batch = loaded.image_tokens([mini("a cat", seed=11, count=2), mini("a dog", seed=5)], quiet)
    alone = [loaded.image_tokens([mini("a cat", seed=seed)], quiet) for seed in (11, 12)] + [
        loaded.image_tokens([mini("a dog", seed=5)], quiet)
    ]
    assert batch.shape == (3, 256)
    for row, single in zip(batch, alone, strict=True):
        assert torch.equal(row, single[0])
    assert not torch.equal(batch[0], batch[1])  # each image its own seed (11, 12), as `seeds` says


def test_cancel_stops_at_the_next_row(dalle_engine: Engine) -> None:
    rows: list[int] = []
    with pytest.raises(Cancelled):
        dalle_engine.generate([mini()], on_progress=lambda e: rows.append(e.step), should_cancel=lambda: len(rows) >= 3)
    assert rows == [1, 2, 3]  # the row running when cancel was asked finishes, no more start


def test_check_refuses_what_min_dalle_cannot_use(dalle_engine: Engine) -> None:
    spec = dalle_engine.spec("mini")
    assert family_for("dalle-mini") is DalleMini and family_for("dalle-mega") is DalleMini
    DalleMini.check(spec, mini())
    with pytest.raises(InvalidRequest, match=r"'mini' \(DALL·E Mini\) makes 256x256 pictures only, not 512x512"):
        DalleMini.check(spec, mini(width=512, height=512))
    with pytest.raises(InvalidRequest, match="'mini' cannot use a negative prompt"):
        DalleMini.check(spec, mini(negative_prompt="blurry"))
    with pytest.raises(InvalidRequest, match="'mini' has its own sampler"):
        DalleMini.check(spec, mini(sampler="Euler a"))
    with pytest.raises(InvalidRequest, match="'mini' cannot do img2img; it can do: txt2img"):
        DalleMini.check(spec, mini(mode=Mode.IMG2IMG, init_image=gradient(256, 256)))
    with pytest.raises(InvalidRequest, match="draws its picture in 16 rows of tokens .* not 30"):
        DalleMini.check(spec, mini(steps=30))
    assert not DalleMini.uses_negative(mini(guidance=16.0))  # a server's negative prompt is not appended


def test_cost_counts_the_flops_of_the_decoder_passes_and_the_vqgan(dalle_engine: Engine, tiny_dalle_dir: Path) -> None:
    loaded = dalle_engine.load("mini")
    sizes = sizes_for(str(tiny_dalle_dir), "dalle-mini")
    with FlopCounterMode(display=False) as tokens:
        loaded.image_tokens([mini()], StepReporter(None, None, 0))
    assert tokens.get_total_flops() == pytest.approx(sizes.encoder_flops() + 256 * 2 * sizes.pass_flops())
    with FlopCounterMode(display=False) as whole:
        dalle_engine.generate([mini()])
    assert whole.get_total_flops() == pytest.approx(sizes.encoder_flops() + sizes.image_flops(), rel=0.01)


def test_cost_of_mini_and_mega_against_an_sd15_image(dalle_engine: Engine) -> None:
    sd_image = txt2img(width=512, height=512, steps=25).cost  # SD 1.5, 512², 25 steps, in the queue's unit
    hub_mini, hub_mega = _spec(Path("/nowhere")), _spec(Path("/nowhere"), "mega", "dalle-mega")  # no config: real
    assert 15 < sd_image / DalleMini.cost(hub_mini, mini()) < 25  # Mini ≈ 2.1 TFLOP a picture
    assert 2 < sd_image / DalleMini.cost(hub_mega, mini()) < 4  # Mega ≈ 15 TFLOP
    four = DalleMini.cost(hub_mini, mini(count=4))
    assert four == pytest.approx(4 * DalleMini.cost(hub_mini, mini()), rel=0.02)  # the prompt is encoded once
    assert DalleMini.cost(dalle_engine.spec("mini"), mini()) < DalleMini.cost(hub_mini, mini())  # tiny is cheap


def test_loading_leaves_grad_mode_threads_and_cudnn_as_they_were(tiny_dalle_dir: Path) -> None:
    # A fresh process: min-dalle's import (which turns grad off and sets the threads) has not run yet there.
    script = f"""
import os, sys, torch
threads = (os.cpu_count() or 1) + 1  # min-dalle would set os.cpu_count()
torch.set_num_threads(threads)
torch.backends.cudnn.allow_tf32 = False
from generation.families.dalle_mini import DalleMini
from generation.specs import ModelSpec
DalleMini(ModelSpec(name="m", source={str(tiny_dalle_dir)!r}, kind="dalle-mini"), torch.device("cpu"), torch.float32)
assert "min_dalle.min_dalle" in sys.modules
print(torch.is_grad_enabled(), torch.get_num_threads() == threads, torch.backends.cudnn.allow_tf32)
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **ONE_THREAD}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "False"]


def test_grad_mode_stays_on_after_generating(dalle_engine: Engine) -> None:
    assert torch.is_grad_enabled()
    dalle_engine.load("mini").image_tokens([mini()], StepReporter(None, None, 0))
    assert torch.is_grad_enabled()  # the loop ran under inference_mode, and only there


def test_weights_are_found_in_min_dalles_and_the_hubs_layouts(tmp_path: Path) -> None:
    own, hub = tmp_path / "own", tmp_path / "hub"
    for name in (
        "dalle_bart_mini/encoder.pt",
        "dalle_bart_mini/decoder.pt",
        "dalle_bart_mini/vocab.json",
        "dalle_bart_mini/merges.txt",
        "vqgan/detoker.pt",
    ):
        (own / name).parent.mkdir(parents=True, exist_ok=True)
        (own / name).touch()
    for name in (
        "encoder_mini.pt",
        "decoder_mini.pt",
        "vocab_mini.json",
        "merges_mini.txt",
        "detoker.pt",
        "encoder.pt",
        "decoder.pt",
        "vocab.json",
        "merges.txt",
    ):
        hub.mkdir(exist_ok=True)
        (hub / name).touch()
    assert detect_kind(own) == "dalle-mini" and weight_paths(own, "dalle-mini")[1] == []
    assert weight_paths(own, "dalle-mini")[0]["detoker.pt"] == own / "vqgan" / "detoker.pt"
    # The hub's flat names: `_mini` for Mini, plain for Mega, the VQGAN shared.
    assert weight_paths(hub, "dalle-mini")[0]["encoder.pt"] == hub / "encoder_mini.pt"
    assert weight_paths(hub, "dalle-mega")[0]["encoder.pt"] == hub / "encoder.pt"
    assert sizes_for(str(hub), "dalle-mini") == MINI and sizes_for(str(hub), "dalle-mega") == MEGA  # no config: real


def test_missing_weights_are_refused_with_the_download_command(tmp_path: Path) -> None:
    (tmp_path / "encoder_mini.pt").touch()
    with pytest.raises(ModelUnavailable) as refused:
        check_source(_spec(tmp_path))
    message = refused.value.user_message
    assert "it has no decoder.pt, detoker.pt, vocab.json, merges.txt for min-dalle" in message
    assert "hf download kuprel/min-dalle encoder_mini.pt decoder_mini.pt vocab_mini.json merges_mini.txt" in message
    with pytest.raises(ModelUnavailable, match="no such directory"):
        Engine({"mini": _spec(tmp_path / "absent")}, device="cpu").load("mini")


def test_dalle_mega_is_the_same_family_with_its_own_sizes(tmp_path: Path) -> None:
    directory = write_tiny_model(tmp_path / "mega", "dalle-mega")
    assert detect_kind(directory) == "dalle-mega"
    engine = Engine({"mega": _spec(directory, "mega", "dalle-mega")}, device="cpu")
    loaded = engine.load("mega")
    assert isinstance(loaded, DalleMini) and loaded.sizes == sizes_for(str(directory), "dalle-mega") != MEGA
    tokens = loaded.image_tokens([mini(model="mega", seed=7)], StepReporter(None, None, 0))
    assert tokens.shape == (1, 256) and int(tokens.max()) < 2**14  # codes of the VQGAN's book


def test_weights_of_other_sizes_are_refused_by_name(tiny_dalle_dir: Path, tmp_path: Path) -> None:
    other = shutil.copytree(tiny_dalle_dir, tmp_path / "other")
    config = json.loads((other / "dalle_config.json").read_text())
    (other / "dalle_config.json").write_text(json.dumps(config | {"embed_count": 64}))
    with pytest.raises(ModelUnavailable, match="encoder.pt does not fit DALL·E Mini's sizes"):
        Engine({"mini": _spec(other)}, device="cpu").load("mini")
