"""The engine against the real diffusers pipelines, on tiny random-weight models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoPipelineForText2Image, StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

from generation.engine import Engine
from generation.errors import Cancelled, GenerationError, InvalidRequest, ModelUnavailable, OutOfMemory
from generation.request import Mode
from generation.results import StepProgress
from generation.specs import ModelSpec
from tests.support.parity import assert_batch_equals_single
from tests.support.requests import gradient, img2img, inpaint, pixels, square_mask, txt2img


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


@pytest.fixture(scope="module")
def raw_sd(tiny_sd_dir):
    pipe = AutoPipelineForText2Image.from_pretrained(tiny_sd_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("model", ["tiny", "tiny-xl"])
@pytest.mark.parametrize("make", [txt2img, img2img, inpaint], ids=["txt2img", "img2img", "inpaint"])
def test_each_mode_makes_images_of_the_requested_size(engine: Engine, model: str, make) -> None:
    request = make(model=model, count=2)
    (images,) = engine.generate([request])
    assert [i.image.size for i in images] == [(64, 64), (64, 64)]
    assert [i.seed for i in images] == [7, 8]
    assert all(i.nsfw is None for i in images)  # no checker configured: not "safe", unknown
    assert not np.array_equal(pixels(images[0].image), pixels(images[1].image))


def test_txt2img_equals_raw_diffusers(engine: Engine, raw_sd) -> None:
    (ours,) = engine.generate([txt2img(negative_prompt="blurry")])
    raw = raw_sd(
        "a red cube",
        negative_prompt="blurry",
        generator=_generator(7),
        num_inference_steps=4,
        guidance_scale=7.0,
        height=64,
        width=64,
    ).images[0]
    assert np.array_equal(pixels(ours[0].image), pixels(raw))


def test_img2img_and_inpaint_equal_raw_diffusers(engine: Engine, raw_sd) -> None:
    (ours_i2i,) = engine.generate([img2img()])
    raw_i2i = StableDiffusionImg2ImgPipeline.from_pipe(raw_sd)(
        "a blue cube",
        image=gradient(),
        strength=0.6,
        generator=_generator(7),
        num_inference_steps=4,
        guidance_scale=7.0,
    ).images[0]
    assert np.array_equal(pixels(ours_i2i[0].image), pixels(raw_i2i))

    (ours_inp,) = engine.generate([inpaint()])
    raw_inp = StableDiffusionInpaintPipeline.from_pipe(raw_sd)(
        "a green cube",
        image=gradient(),
        mask_image=square_mask(),
        strength=0.9,
        generator=_generator(7),
        num_inference_steps=4,
        guidance_scale=7.0,
        height=64,
        width=64,
    ).images[0]
    assert np.array_equal(pixels(ours_inp[0].image), pixels(raw_inp))


def test_same_seed_reproduces_and_other_seed_differs(engine: Engine) -> None:
    first = engine.generate([txt2img(seed=42)])[0][0].image
    again = engine.generate([txt2img(seed=42)])[0][0].image
    other = engine.generate([txt2img(seed=43)])[0][0].image
    assert np.array_equal(pixels(first), pixels(again))
    assert np.abs(pixels(first) - pixels(other)).mean() > 1


@pytest.mark.parametrize("make", [txt2img, img2img, inpaint], ids=["txt2img", "img2img", "inpaint"])
def test_batch_equals_single_runs(engine: Engine, make) -> None:
    requests = [
        make("a cat", seed=11, count=2),
        make("a dog", seed=5, negative_prompt="blurry"),
        make("a ship", seed=900),
    ]
    assert_batch_equals_single(engine, requests)


def test_incompatible_requests_are_not_batched(engine: Engine) -> None:
    with pytest.raises(ValueError, match="must share"):
        engine.generate([txt2img(), txt2img(steps=5)])


def test_sampler_is_swapped_per_call_and_model_scheduler_comes_back(engine: Engine) -> None:
    default = engine.generate([txt2img()])[0][0]
    euler_a = engine.generate([txt2img(sampler="Euler a")])[0][0]
    dpm = engine.generate([txt2img(sampler="DPM++ 2M Karras")])[0][0]
    default_again = engine.generate([txt2img()])[0][0]
    assert "Sampler: PLMS" in default.parameters
    assert "Sampler: Euler a" in euler_a.parameters and "Sampler: DPM++ 2M Karras" in dpm.parameters
    assert np.abs(pixels(default.image) - pixels(euler_a.image)).mean() > 1
    assert np.array_equal(pixels(default.image), pixels(default_again.image))


def test_progress_reports_every_step_with_linear_previews(engine: Engine) -> None:
    events: list[StepProgress] = []
    engine.generate([txt2img(count=2, steps=6)], on_progress=events.append)
    assert [e.step for e in events] == list(range(1, len(events) + 1))
    assert all(e.total == events[-1].step for e in events)
    with_previews = [e for e in events if e.previews]
    assert [e.step for e in with_previews] == [s for s in range(2, events[-1].total, 2)]
    assert all(len(e.previews) == 2 and e.previews[0].size == (32, 32) for e in with_previews)


def test_tiny_vae_previews_when_configured(tiny_sd_dir, tmp_path) -> None:
    from generation.tiny import tiny_preview_vae

    tiny_preview_vae().save_pretrained(tmp_path / "taesd")
    spec = ModelSpec(name="tiny", source=str(tiny_sd_dir), preview_vae=str(tmp_path / "taesd"))
    engine = Engine({"tiny": spec}, device="cpu", preview_every=1)
    events: list[StepProgress] = []
    engine.generate([txt2img(steps=3)], on_progress=events.append)
    previews = [e.previews for e in events if e.previews]
    assert previews and all(p[0].size == (64, 64) for p in previews)  # decoded at full size


def test_cancel_stops_at_the_next_step(engine: Engine) -> None:
    steps: list[int] = []
    with pytest.raises(Cancelled):
        engine.generate(
            [txt2img(steps=20)], on_progress=lambda e: steps.append(e.step), should_cancel=lambda: len(steps) >= 3
        )
    assert len(steps) == 4  # the step running when cancel was seen finishes, no more start


def test_out_of_memory_has_its_own_error_and_others_become_generation_errors(engine: Engine) -> None:
    def oom(event: StepProgress) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(OutOfMemory, match="ran out of memory making 3 image"):
        engine.generate([txt2img(count=3)], on_progress=oom)

    def broken(event: StepProgress) -> None:
        raise RuntimeError("something inside diffusers broke")

    with pytest.raises(GenerationError, match=r"Generation failed \(RuntimeError\)") as info:
        engine.generate([txt2img()], on_progress=broken)
    assert not isinstance(info.value, OutOfMemory)
    assert engine.generate([txt2img()])  # the engine still works afterwards


def test_safety_flags_are_reported_per_image_not_acted_on(tiny_sd_dir) -> None:
    seen: list[int] = []

    def flag_second(images):
        seen.append(len(images))
        return [i == 1 for i in range(len(images))]

    spec = ModelSpec(name="tiny", source=str(tiny_sd_dir))
    engine = Engine({"tiny": spec}, device="cpu", safety_checkers={"tiny": flag_second})
    (images,) = engine.generate([txt2img(count=2)])
    assert seen == [2] and [i.nsfw for i in images] == [False, True]
    assert pixels(images[1].image).max() > 0  # not blacked out: the server's policy decides


def test_switching_models_keeps_one_resident(engine: Engine) -> None:
    engine.generate([txt2img(model="tiny")])
    assert engine.resident == "tiny"
    engine.generate([txt2img(model="tiny-xl")])
    assert engine.resident == "tiny-xl"
    assert engine.generate([img2img(model="tiny-xl")])  # derived with from_pipe from the resident one


def test_derived_pipelines_share_weights_and_keep_dtype(tiny_sd_dir) -> None:
    engine = Engine({"tiny": ModelSpec(name="tiny", source=str(tiny_sd_dir))}, device="cpu", dtype="bfloat16")
    base = engine.load("tiny").pipeline(Mode.TXT2IMG)
    derived = engine.load("tiny").pipeline(Mode.INPAINT)
    assert derived.unet is base.unet and derived.unet.dtype == torch.bfloat16


def test_unknown_and_unreachable_models_are_named(engine: Engine, tmp_path) -> None:
    with pytest.raises(ModelUnavailable, match="Unknown model 'nope'. Choose one of: tiny, tiny-xl"):
        engine.generate([txt2img(model="nope")])
    offline = Engine({"hub": ModelSpec(name="hub", source="someone/not-cached-model")}, device="cpu")
    with pytest.raises(ModelUnavailable, match=r"Model 'hub' could not be loaded from 'someone/not-cached-model'"):
        offline.generate([txt2img(model="hub")])
    empty = Engine({"dir": ModelSpec(name="dir", source=str(tmp_path))}, device="cpu")
    with pytest.raises(ModelUnavailable, match="no model_index.json"):
        empty.generate([txt2img(model="dir")])


@pytest.mark.parametrize("guidance", [0.0, 1.0])
def test_a_negative_prompt_the_model_would_ignore_is_refused(engine: Engine, guidance: float) -> None:
    # Without CFG (guidance ≤ 1, as SD-Turbo runs) diffusers never reads the negative prompt.
    with pytest.raises(InvalidRequest, match=rf"needs guidance above 1, and this request has {guidance:g}"):
        engine.generate([txt2img(guidance=guidance, negative_prompt="blurry")])
    assert engine.generate([txt2img(guidance=guidance)])  # without one it runs
