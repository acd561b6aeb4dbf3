"""The SD3 family against the raw diffusers SD3 pipelines, on a tiny random-weight model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusion3Img2ImgPipeline, StableDiffusion3InpaintPipeline, StableDiffusion3Pipeline

from generation.catalog import family_for
from generation.engine import Engine
from generation.errors import Cancelled, InvalidRequest
from generation.families.sd3 import StableDiffusion3
from generation.request import Mode
from generation.results import StepProgress
from generation.specs import ModelSpec
from generation.tiny.sd3 import build_tiny_sd3
from tests.support.parity import assert_batch_equals_single
from tests.support.requests import gradient, img2img, inpaint, pixels, square_mask, txt2img


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _spec(source: Path, **changes) -> ModelSpec:
    fields = {"kind": "sd3", "steps": 4, "guidance": 7.0, "width": 64, "height": 64} | changes
    return ModelSpec(name="sd3", source=str(source), **fields)


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD3 pipeline on disk."""
    directory = tmp_path_factory.mktemp("models") / "tiny-sd3"
    build_tiny_sd3().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def sd3_engine(tiny_sd3_dir: Path) -> Engine:
    return Engine({"sd3": _spec(tiny_sd3_dir)}, device="cpu", preview_every=2)


@pytest.fixture(scope="module")
def raw_sd3(tiny_sd3_dir: Path) -> StableDiffusion3Pipeline:
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_sd3_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd3(make=txt2img, prompt: str | None = None, **changes):
    """A request for the tiny SD3 model."""
    fields = {"model": "sd3"} | changes
    return make(prompt, **fields) if prompt is not None else make(**fields)


def test_txt2img_with_negative_prompt_equals_raw_diffusers(sd3_engine: Engine, raw_sd3) -> None:
    (ours,) = sd3_engine.generate([sd3(prompt="a sign that says hello", negative_prompt="blurry")])
    raw = raw_sd3(
        "a sign that says hello",
        negative_prompt="blurry",
        generator=_generator(7),
        num_inference_steps=4,
        guidance_scale=7.0,
        height=64,
        width=64,
    ).images[0]  # diffusers' default max_sequence_length is ours, 256
    assert np.array_equal(pixels(ours[0].image), pixels(raw))
    (plain,) = sd3_engine.generate([sd3(prompt="a sign that says hello")])
    assert np.abs(pixels(ours[0].image) - pixels(plain[0].image)).mean() > 0  # the negative prompt counted


def test_img2img_and_inpaint_equal_raw_diffusers(sd3_engine: Engine, raw_sd3) -> None:
    (ours_i2i,) = sd3_engine.generate([sd3(img2img)])
    raw_i2i = StableDiffusion3Img2ImgPipeline.from_pipe(raw_sd3)(
        "a blue cube",
        image=gradient(),
        strength=0.6,
        generator=_generator(7),
        num_inference_steps=4,
        guidance_scale=7.0,
        height=64,
        width=64,
    ).images[0]
    assert np.array_equal(pixels(ours_i2i[0].image), pixels(raw_i2i))

    (ours_inp,) = sd3_engine.generate([sd3(inpaint)])
    raw_inp = StableDiffusion3InpaintPipeline.from_pipe(raw_sd3)(
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


@pytest.mark.parametrize("make", [txt2img, img2img, inpaint], ids=["txt2img", "img2img", "inpaint"])
def test_batch_equals_single_runs(sd3_engine: Engine, make) -> None:
    requests = [
        sd3(make, "a cat", seed=11, count=2),
        sd3(make, "a dog", seed=5, negative_prompt="blurry"),  # CFG always runs: negatives may mix
        sd3(make, "a ship", seed=900),
    ]
    assert_batch_equals_single(sd3_engine, requests)


def test_cancel_stops_at_the_next_step(sd3_engine: Engine) -> None:
    steps: list[int] = []
    with pytest.raises(Cancelled):
        sd3_engine.generate(
            [sd3(steps=12)], on_progress=lambda e: steps.append(e.step), should_cancel=lambda: len(steps) >= 3
        )
    assert len(steps) == 4


def test_progress_reports_every_step_with_linear_previews(sd3_engine: Engine) -> None:
    events: list[StepProgress] = []
    sd3_engine.generate([sd3(count=2, steps=6, height=128)], on_progress=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4, 5, 6] and all(e.total == 6 for e in events)
    with_previews = [e for e in events if e.previews]
    assert [e.step for e in with_previews] == [2, 4]
    assert all(len(e.previews) == 2 and e.previews[0].size == (32, 64) for e in with_previews)


def test_check_refuses_samplers_and_sizes_off_the_16_pixel_grid(sd3_engine: Engine) -> None:
    spec = sd3_engine.spec("sd3")
    assert family_for("sd3") is StableDiffusion3
    with pytest.raises(InvalidRequest, match="The model 'sd3' has its own sampler"):
        StableDiffusion3.check(spec, sd3(sampler="DPM++ 2M Karras"))
    with pytest.raises(InvalidRequest, match=r"The model 'sd3' needs .* multiples of 16, not 64x120"):
        StableDiffusion3.check(spec, sd3(height=120))
    with pytest.raises(InvalidRequest, match="multiples of 16"):  # the engine checks before any GPU work
        sd3_engine.generate([sd3(height=120)])


def _seen_by_transformer(engine: Engine, prompt: str) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def keep(module, args, kwargs) -> None:
        seen.setdefault("text", kwargs["encoder_hidden_states"].clone())
        seen.setdefault("pooled", kwargs["pooled_projections"].clone())

    hook = engine.load("sd3").core_module().register_forward_pre_hook(keep, with_kwargs=True)
    try:
        engine.generate([sd3(prompt=prompt, steps=1)])
    finally:
        hook.remove()
    return seen


def test_long_prompts_reach_t5_past_clips_77_tokens(sd3_engine: Engine) -> None:
    words = ("a red cube in the " * 20).split()  # 100 words: 100 T5 tokens, ~400 CLIP tokens
    changed = [*words[:90], "green", *words[91:]]  # only word 91 differs
    first = _seen_by_transformer(sd3_engine, " ".join(words))
    second = _seen_by_transformer(sd3_engine, " ".join(changed))
    # SD3 joins the CLIP embeddings (77 tokens) and the T5 ones (256) along the sequence.
    assert first["text"].shape[1] == 77 + 256
    assert torch.equal(first["pooled"], second["pooled"]) and torch.equal(first["text"][:, :77], second["text"][:, :77])
    assert not torch.allclose(first["text"][:, 77:], second["text"][:, 77:])


def test_cost_follows_the_transformer_and_cfg(tiny_sd3_dir: Path) -> None:
    hub = ModelSpec(name="big", source="stabilityai/not-cached-here", kind="sd3")
    request = sd3(width=1024, height=1024)
    assert 8 < StableDiffusion3.cost(hub, request) / request.cost < 10  # SD 3.5 Large when no config is at hand
    no_cfg = request.with_changes(guidance=1.0)
    assert StableDiffusion3.cost(hub, no_cfg) == pytest.approx(StableDiffusion3.cost(hub, request) / 2, rel=0.01)
    assert StableDiffusion3.cost(_spec(tiny_sd3_dir), sd3()) < sd3().cost


def test_derived_pipelines_share_weights_and_keep_dtype(tiny_sd3_dir: Path) -> None:
    engine = Engine({"sd3": _spec(tiny_sd3_dir)}, device="cpu", dtype="bfloat16")
    loaded = engine.load("sd3")
    derived = loaded.pipeline(Mode.IMG2IMG)
    assert derived.transformer is loaded.pipeline(Mode.TXT2IMG).transformer
    assert derived.transformer.dtype == torch.bfloat16 and derived.text_encoder_3.dtype == torch.bfloat16
