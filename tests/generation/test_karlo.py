"""The Karlo family against the raw diffusers UnCLIPPipeline, on a tiny random-weight model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UnCLIPPipeline

from generation.catalog import family_for
from generation.engine import Engine
from generation.errors import Cancelled, InvalidRequest
from generation.families.karlo import DECODER_STEP_COST, SUPER_RES_STEP_COST, SUPER_RES_STEPS, Karlo
from generation.families.unclip import PRIOR_STEP_COST, PRIOR_STEPS
from generation.request import Mode
from generation.results import StepProgress
from generation.specs import ModelSpec
from generation.tiny.karlo import build_tiny_karlo
from tests.support.requests import gradient, pixels, txt2img
from tests.support.unclip import raw_unclip

STEPS = 3
# The bar counts decoder steps: the prior's 25 steps are worth 7 of them, super-resolution's 7 steps 49 (FLOPs).
PRIOR_UNITS, SUPER_RES_UNITS = 7, 49
TOTAL = PRIOR_UNITS + STEPS + SUPER_RES_UNITS


def karlo(make=txt2img, prompt: str | None = None, **changes):
    """A request for the tiny Karlo at its one size and guidance 8."""
    fields = {"model": "karlo", "guidance": 8.0, "steps": STEPS, "width": 256, "height": 256} | changes
    return make(prompt, **fields) if prompt is not None else make(**fields)


@pytest.fixture(scope="session")
def tiny_karlo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models") / "tiny-karlo"
    build_tiny_karlo().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def raw_karlo(tiny_karlo_dir: Path) -> UnCLIPPipeline:
    return raw_unclip(tiny_karlo_dir)


@pytest.fixture(scope="module")
def engine(tiny_karlo_dir: Path) -> Engine:
    spec = ModelSpec(name="karlo", source=str(tiny_karlo_dir), kind="karlo", steps=STEPS, guidance=8.0, width=256)
    return Engine({"karlo": spec}, device="cpu", preview_every=2)


def _raw(pipe: UnCLIPPipeline, prompt: str, seed: int = 7, guidance: float = 8.0):
    return pipe(
        prompt,
        generator=torch.Generator("cpu").manual_seed(seed),
        decoder_num_inference_steps=STEPS,
        decoder_guidance_scale=guidance,
    ).images[0]


def test_txt2img_equals_raw_unclip_pipeline(engine: Engine, raw_karlo: UnCLIPPipeline) -> None:
    (ours,) = engine.generate([karlo(prompt="a sign that says hello")])
    assert ours[0].image.size == (256, 256)
    assert np.array_equal(pixels(ours[0].image), pixels(_raw(raw_karlo, "a sign that says hello")))
    assert "Sampler: UnCLIPScheduler" in ours[0].parameters and "CFG scale: 8" in ours[0].parameters
    (other,) = engine.generate([karlo(prompt="a green dog")])
    assert np.abs(pixels(ours[0].image) - pixels(other[0].image)).mean() > 1  # the prompt reaches the picture
    (weaker,) = engine.generate([karlo(prompt="a sign that says hello", guidance=2.0)])
    assert np.array_equal(pixels(weaker[0].image), pixels(_raw(raw_karlo, "a sign that says hello", guidance=2.0)))
    assert np.abs(pixels(ours[0].image) - pixels(weaker[0].image)).mean() > 1  # guidance is the decoder's


def test_a_batch_is_raw_diffusers_batch_and_each_image_keeps_its_seed(
    engine: Engine, raw_karlo: UnCLIPPipeline
) -> None:
    requests = [
        karlo(prompt="a cat", seed=11, count=2),
        karlo(prompt="a dog", seed=5),
        karlo(prompt="a ship", seed=900),
    ]
    batched = [image for images in engine.generate(requests) for image in images]
    prompts, seeds = ["a cat", "a cat", "a dog", "a ship"], [11, 12, 5, 900]
    raw = raw_karlo(
        prompts,
        generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
        decoder_num_inference_steps=STEPS,
        decoder_guidance_scale=8.0,
    ).images
    assert all(np.array_equal(pixels(ours.image), pixels(theirs)) for ours, theirs in zip(batched, raw, strict=True))

    # Alone, each image is the batch's up to rounding. Not to the pixel: UnCLIPScheduler divides by sqrt(alpha_bar)
    # (1e-4 at the first step), which turns batched kernels' 1e-6 into a few pixels' worth on a random decoder
    # that never corrects it (raw diffusers does the same). A wrong seed, prompt or order would differ everywhere.
    singles = [engine.generate([karlo(prompt=p, seed=s)])[0][0] for p, s in zip(prompts, seeds, strict=True)]
    for index, (ours, alone) in enumerate(zip(batched, singles, strict=True)):
        assert ours.seed == alone.seed and ours.parameters == alone.parameters
        assert np.abs(pixels(ours.image) - pixels(alone.image)).mean() < 0.1
        others = [s for i, s in enumerate(singles) if i != index]
        assert all(np.abs(pixels(ours.image) - pixels(other.image)).mean() > 10 for other in others)


def test_progress_counts_decoder_steps_and_the_other_stages_share(engine: Engine) -> None:
    assert round(PRIOR_STEPS * PRIOR_STEP_COST / DECODER_STEP_COST) == PRIOR_UNITS
    assert round(SUPER_RES_STEPS * SUPER_RES_STEP_COST / DECODER_STEP_COST) == SUPER_RES_UNITS
    events: list[StepProgress] = []
    engine.generate([karlo(count=2)], on_progress=events.append)
    assert all(e.total == TOTAL for e in events)
    steps = [e.step for e in events]
    assert steps[:PRIOR_UNITS] == list(range(1, PRIOR_UNITS + 1))  # the prior moves the bar every few steps
    assert steps[PRIOR_UNITS : PRIOR_UNITS + STEPS] == [PRIOR_UNITS + k for k in range(1, STEPS + 1)]  # the decoder
    super_res = steps[PRIOR_UNITS + STEPS :]
    assert super_res == [PRIOR_UNITS + STEPS + 7 * k for k in range(1, SUPER_RES_STEPS + 1)] and super_res[-1] == TOTAL
    assert not any(e.previews for e in events)  # the pipeline keeps its samples to itself


@pytest.mark.parametrize(
    "after",
    [2, PRIOR_UNITS + 1, PRIOR_UNITS + STEPS + 1],
    ids=["prior", "decoder", "super-res"],
)
def test_cancel_stops_after_the_current_step(engine: Engine, raw_karlo: UnCLIPPipeline, after: int) -> None:
    events: list[int] = []
    with pytest.raises(Cancelled):
        engine.generate(
            [karlo()], on_progress=lambda e: events.append(e.step), should_cancel=lambda: len(events) >= after
        )
    assert len(events) == after
    # The pipeline's own progress bar is back, and the next request runs whole.
    assert "progress_bar" not in vars(engine.load("karlo")._pipe)
    (ours,) = engine.generate([karlo()])
    assert np.array_equal(pixels(ours[0].image), pixels(_raw(raw_karlo, "a red cube")))


def test_check_refuses_what_unclip_cannot_do(engine: Engine) -> None:
    spec = engine.spec("karlo")
    assert family_for("karlo") is Karlo
    with pytest.raises(InvalidRequest, match="The model 'karlo' cannot do img2img; it can do: txt2img"):
        Karlo.check(spec, karlo(mode=Mode.IMG2IMG, init_image=gradient(256, 256)))
    with pytest.raises(InvalidRequest, match="'karlo' cannot use a negative prompt"):
        Karlo.check(spec, karlo(negative_prompt="blurry"))
    assert not Karlo.uses_negative(karlo())  # so a server's own negative prompt is not added to its jobs
    with pytest.raises(InvalidRequest, match="The model 'karlo' has its own sampler"):
        Karlo.check(spec, karlo(sampler="DDIM"))
    with pytest.raises(InvalidRequest, match=r"'karlo' makes 256x256 pictures only .* not 512x512"):
        Karlo.check(spec, karlo(width=512, height=512))
    with pytest.raises(InvalidRequest, match="'karlo' needs at least 2 steps .* not 1"):
        Karlo.check(spec, karlo(steps=1))
    Karlo.check(spec, karlo(steps=2))


def test_cost_counts_all_three_stages_in_sd_pixel_steps(engine: Engine) -> None:
    spec = engine.spec("karlo")
    default = karlo(steps=25)
    sd_image = txt2img(width=512, height=512, steps=25)
    assert 2.3 < Karlo.cost(spec, default) / sd_image.cost < 2.5  # super-resolution is most of it
    assert Karlo.cost(spec, default.with_changes(count=2)) == 2 * Karlo.cost(spec, default)
    assert Karlo.cost(spec, default.with_changes(steps=50)) > Karlo.cost(spec, default)


def test_loads_the_hubs_model_index_that_diffusers_from_pretrained_cannot(
    tiny_karlo_dir: Path, raw_karlo: UnCLIPPipeline, tmp_path: Path
) -> None:
    # kakaobrain/karlo-v1-alpha names its text projection's library "unclip"; save_pretrained writes "diffusers".
    hub_like = shutil.copytree(tiny_karlo_dir, tmp_path / "karlo-v1-alpha")
    index = json.loads((hub_like / "model_index.json").read_text())
    index["text_proj"] = ["unclip", "UnCLIPTextProjModel"]
    (hub_like / "model_index.json").write_text(json.dumps(index))
    for directory in (tiny_karlo_dir, hub_like):
        with pytest.raises((AttributeError, ValueError)):
            UnCLIPPipeline.from_pretrained(directory)
    spec = ModelSpec(name="karlo", source=str(hub_like), kind="karlo", steps=STEPS, guidance=8.0, width=256)
    (ours,) = Engine({"karlo": spec}, device="cpu").generate([karlo()])
    assert np.array_equal(pixels(ours[0].image), pixels(_raw(raw_karlo, "a red cube")))
