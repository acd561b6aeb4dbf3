"""The DeepFloyd IF family against the raw diffusers stage pipelines, on a tiny random-weight cascade."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    IFImg2ImgPipeline,
    IFImg2ImgSuperResolutionPipeline,
    IFInpaintingPipeline,
    IFInpaintingSuperResolutionPipeline,
    IFPipeline,
    IFSuperResolutionPipeline,
    StableDiffusionUpscalePipeline,
)

from generation.catalog import Catalog
from generation.engine import Engine
from generation.errors import Cancelled, InvalidRequest, ModelUnavailable
from generation.families.deepfloyd_if import STEP_COST, STEP_UNITS, DeepFloydIF
from generation.request import GenerationRequest, Mode
from generation.results import StepProgress
from generation.specs import ModelSpec
from tests.support.parity import assert_batch_equals_single
from tests.support.requests import gradient, pixels, square_mask, txt2img


@pytest.fixture(scope="session")
def tiny_if_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny IF cascade on disk (stage I, stage_2/, stage_3/), written once per session."""
    from generation.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-if", "if")


def _spec(source: Path, name: str = "if", **changes) -> ModelSpec:
    return ModelSpec(name=name, source=str(source), kind="if", steps=4, width=64, height=64, **changes)


@pytest.fixture(scope="module")
def if_engine(tiny_if_dir: Path) -> Engine:
    """Two stages as `if`, three as `if3`; previews every 2 progress units."""
    specs = {"if": _spec(tiny_if_dir), "if3": _spec(tiny_if_dir, "if3", stages=3)}
    return Engine(specs, device="cpu", preview_every=2)


class RawCascade:
    """The raw diffusers pipelines, called as the IF model card does: encode once, fresh generators per stage."""

    def __init__(self, directory: Path) -> None:
        self.stage_1 = IFPipeline.from_pretrained(directory)
        self.stage_2 = IFSuperResolutionPipeline.from_pretrained(directory / "stage_2", text_encoder=None)
        self.stage_3 = StableDiffusionUpscalePipeline.from_pretrained(directory / "stage_3")
        for pipe in (self.stage_1, self.stage_2, self.stage_3):
            pipe.set_progress_bar_config(disable=True)

    def __call__(
        self, prompt: str, mode: Mode = Mode.TXT2IMG, seed: int = 7, steps: int = 4, output_type: str = "pil", **inputs
    ):
        """Stage I → II of one image; `inputs` holds negative_prompt, strength, image, mask_image."""
        negative = inputs.pop("negative_prompt", None)
        embeds, negative_embeds = self.stage_1.encode_prompt(prompt, negative_prompt=negative, clean_caption=False)
        text = {"prompt_embeds": embeds, "negative_prompt_embeds": negative_embeds, "num_inference_steps": steps}
        first, second = self.stage_1, self.stage_2
        one, two = dict(inputs), dict(inputs)
        if mode is Mode.IMG2IMG:
            first, second = IFImg2ImgPipeline(**first.components), IFImg2ImgSuperResolutionPipeline(**second.components)
        if mode is Mode.INPAINT:
            first = IFInpaintingPipeline(**first.components)
            second = IFInpaintingSuperResolutionPipeline(**second.components)
        if mode is not Mode.TXT2IMG:
            two["original_image"] = two.pop("image")  # the same 64 px picture: diffusers resizes it to 256
        low = first(**text, **one, guidance_scale=7.0, generator=_generator(seed), output_type="pt").images
        return second(image=low, **text, **two, guidance_scale=4.0, generator=_generator(seed), output_type=output_type)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


@pytest.fixture(scope="module")
def raw(tiny_if_dir: Path) -> RawCascade:
    return RawCascade(tiny_if_dir)


def _txt2img(prompt: str = "a red cube", **changes) -> GenerationRequest:
    return txt2img(prompt, **({"model": "if"} | changes))


def _img2img(prompt: str = "a blue cube", **changes) -> GenerationRequest:
    return _txt2img(prompt, mode=Mode.IMG2IMG, **({"init_image": gradient(), "strength": 0.6} | changes))


def _inpaint(prompt: str = "a green cube", **changes) -> GenerationRequest:
    inputs = {"init_image": gradient(), "mask": square_mask(), "strength": 0.9}
    return _txt2img(prompt, mode=Mode.INPAINT, **(inputs | changes))


def test_txt2img_equals_raw_stage_1_then_2(if_engine: Engine, raw: RawCascade) -> None:
    (ours,) = if_engine.generate([_txt2img(prompt="a sign that says hello", negative_prompt="blurry")])
    expected = raw("a sign that says hello", negative_prompt="blurry").images[0]
    assert ours[0].image.size == (256, 256)  # stage I at the request's 64x64, stage II 4x
    assert np.array_equal(pixels(ours[0].image), pixels(expected))  # same calls, same kernels: bit for bit
    assert "Sampler: DDPMScheduler" in ours[0].parameters and "Size: 256x256" in ours[0].parameters


def test_img2img_and_inpaint_equal_raw_stages(if_engine: Engine, raw: RawCascade) -> None:
    (ours,) = if_engine.generate([_img2img()])
    expected = raw("a blue cube", Mode.IMG2IMG, image=gradient(), strength=0.6).images[0]
    assert np.array_equal(pixels(ours[0].image), pixels(expected))

    (ours,) = if_engine.generate([_inpaint()])
    expected = raw("a green cube", Mode.INPAINT, image=gradient(), mask_image=square_mask(), strength=0.9).images[0]
    assert np.array_equal(pixels(ours[0].image), pixels(expected))


def test_three_stages_equal_raw_stage_1_2_3(if_engine: Engine, raw: RawCascade) -> None:
    (ours,) = if_engine.generate([_txt2img(model="if3", steps=3)])
    high = raw("a red cube", steps=3, output_type="pt").images
    expected = raw.stage_3(
        prompt="a red cube",
        image=(high / 2 + 0.5).clamp(0, 1),
        noise_level=100,
        num_inference_steps=3,
        guidance_scale=9.0,
        generator=_generator(7),
    ).images[0]
    assert ours[0].image.size == (1024, 1024)
    assert np.array_equal(pixels(ours[0].image), pixels(expected))


def test_non_square_img2img_keeps_the_request_shape(if_engine: Engine) -> None:
    request = _img2img(width=80, height=64, init_image=gradient(80, 64))
    (ours,) = if_engine.generate([request])
    assert ours[0].image.size == (320, 256)  # diffusers alone would resize the picture to sample_size first


@pytest.mark.parametrize("make", [_txt2img, _img2img, _inpaint], ids=["txt2img", "img2img", "inpaint"])
def test_batch_equals_single_runs(if_engine: Engine, make) -> None:
    requests = [make(prompt="a cat", seed=11, count=2), make(prompt="a dog", seed=5, negative_prompt="dark")]
    assert_batch_equals_single(if_engine, requests)


def test_progress_is_one_bar_over_all_stages_with_previews(if_engine: Engine) -> None:
    events: list[StepProgress] = []
    if_engine.generate([_txt2img(model="if3", steps=3, count=2)], on_progress=events.append)
    ends = np.cumsum([3 * units for units in STEP_UNITS])  # where stages I, II and III end, in units
    assert {e.total for e in events} == {ends[-1]}
    steps = [e.step for e in events]
    assert steps == sorted(set(steps)) and steps[-1] == ends[-1]
    previews = {e.step: e.previews for e in events if e.previews}
    assert all(len(p) == 2 for p in previews.values())
    # Each stage shows its own pixels (stage III, whose latents are not RGB, shows what it is upscaling) ...
    stage_of = {step: int(np.searchsorted(ends, step)) for step in previews}
    sizes = {(stage_of[step], p[0].size) for step, p in previews.items()}
    assert sizes == {(0, (64, 64)), (1, (256, 256)), (2, (256, 256))}
    # ... at least every 2 units, or every step where one step weighs more.
    marks = [0, *sorted(previews), ends[-1]]
    assert max(b - a for a, b in itertools.pairwise(marks)) <= max(2, *STEP_UNITS)


def test_img2img_progress_counts_the_steps_strength_leaves(if_engine: Engine) -> None:
    events: list[StepProgress] = []
    if_engine.generate([_img2img(steps=5, strength=0.6)], on_progress=events.append)  # 3 of 5 steps per stage
    assert [e.total for e in events][-1] == events[-1].step == 3 * (STEP_UNITS[0] + STEP_UNITS[1])


@pytest.mark.parametrize("after", [2, 4 * STEP_UNITS[0] + STEP_UNITS[1]], ids=["in stage I", "in stage II"])
def test_cancel_mid_run_raises_cancelled(if_engine: Engine, after: int) -> None:
    seen: list[int] = []
    with pytest.raises(Cancelled):
        if_engine.generate(
            [_txt2img()],
            on_progress=lambda e: seen.append(e.step),
            should_cancel=lambda: bool(seen) and seen[-1] >= after,
        )
    assert seen[-1] == after  # the step that saw the cancel was the last


def test_sampler_and_impossible_options_are_refused(if_engine: Engine, tiny_if_dir: Path) -> None:
    with pytest.raises(InvalidRequest, match="'if' has its own sampler; leave the sampler out"):
        if_engine.generate([_txt2img(sampler="Euler a")])
    with pytest.raises(InvalidRequest, match="run no denoising step"):
        if_engine.generate([_img2img(steps=1, strength=0.5)])
    catalog = Catalog([_spec(tiny_if_dir, stages=4)])
    with pytest.raises(InvalidRequest, match="stages = 4; DeepFloyd IF runs 2 or 3 stages"):
        catalog.check(_txt2img())


def test_cost_counts_every_stage_in_sd_pixel_steps(tiny_if_dir: Path) -> None:
    two, three = _spec(tiny_if_dir), _spec(tiny_if_dir, stages=3)
    request = _txt2img(steps=50)
    assert DeepFloydIF.cost(two, request) == 64 * 64 * 50 * (STEP_COST[0] + STEP_COST[1])
    assert DeepFloydIF.cost(three, request) == 64 * 64 * 50 * sum(STEP_COST)
    # img2img skips (1 - strength) of stages I and II, as the pipelines do; stage III always runs every step.
    partial = _img2img(steps=50, strength=0.5, count=2)
    assert DeepFloydIF.cost(three, partial) == 64 * 64 * 2 * (25 * (STEP_COST[0] + STEP_COST[1]) + 50 * STEP_COST[2])
    sd_image = 512 * 512 * 25
    assert 40 < Catalog([two]).cost(request) / sd_image < 70  # one IF image weighs ~55 SD 1.5 images


def test_variants_share_the_resident_weights(if_engine: Engine) -> None:
    loaded = if_engine.load("if")
    assert loaded.pipeline(1, Mode.INPAINT).unet is loaded.pipeline(1, Mode.TXT2IMG).unet
    assert loaded.pipeline(2, Mode.IMG2IMG).unet is loaded.pipeline(2, Mode.TXT2IMG).unet
    assert loaded.pipeline(2, Mode.TXT2IMG).text_encoder is None  # stage II reuses stage I's embeddings


def test_a_missing_stage_is_named(tiny_if_dir: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_if_dir, stage_2=str(tmp_path / "nowhere"))
    engine = Engine({"if": spec}, device="cpu")
    with pytest.raises(ModelUnavailable, match=r"could not be loaded from '.*nowhere': it is not a diffusers"):
        engine.generate([_txt2img()])
