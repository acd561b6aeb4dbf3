"""The FLUX family against the raw diffusers Flux pipelines, on tiny random-weight schnell- and dev-shaped models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxImg2ImgPipeline, FluxInpaintPipeline, FluxPipeline

from generation.catalog import family_for
from generation.engine import Engine
from generation.errors import Cancelled, InvalidRequest
from generation.families.flux import TRUE_CFG_SCALE, Flux
from generation.request import Mode
from generation.results import StepProgress
from generation.specs import ModelSpec
from generation.tiny.flux import build_tiny_flux
from tests.support.parity import assert_batch_equals_single
from tests.support.requests import gradient, img2img, inpaint, pixels, square_mask, txt2img


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _spec(name: str, source: Path, **changes) -> ModelSpec:
    fields = {"kind": "flux", "steps": 4, "guidance": 0.0, "width": 64, "height": 64} | changes
    return ModelSpec(name=name, source=str(source), **fields)


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny schnell-shaped FLUX pipeline on disk (no embedded guidance)."""
    directory = tmp_path_factory.mktemp("models") / "tiny-flux"
    build_tiny_flux().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_flux_dev_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dev-shaped FLUX pipeline on disk (guidance_embeds=True)."""
    directory = tmp_path_factory.mktemp("models") / "tiny-flux-dev"
    build_tiny_flux(guidance_embeds=True).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def flux_engine(tiny_flux_dir: Path, tiny_flux_dev_dir: Path) -> Engine:
    specs = {"flux": _spec("flux", tiny_flux_dir), "flux-dev": _spec("flux-dev", tiny_flux_dev_dir, guidance=3.5)}
    return Engine(specs, device="cpu", preview_every=2)


@pytest.fixture(scope="module")
def raw_flux(tiny_flux_dir: Path) -> FluxPipeline:
    pipe = FluxPipeline.from_pretrained(tiny_flux_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flux(make=txt2img, prompt: str | None = None, **changes):
    """A request for the tiny schnell model with schnell's guidance of 0."""
    fields = {"model": "flux", "guidance": 0.0} | changes
    return make(prompt, **fields) if prompt is not None else make(**fields)


def test_txt2img_equals_raw_diffusers(flux_engine: Engine, raw_flux: FluxPipeline) -> None:
    (ours,) = flux_engine.generate([flux(prompt="a sign that says hello")])
    raw = raw_flux(
        "a sign that says hello",
        generator=_generator(7),
        num_inference_steps=4,
        guidance_scale=0.0,
        height=64,
        width=64,
        max_sequence_length=256,  # schnell's
    ).images[0]
    assert np.array_equal(pixels(ours[0].image), pixels(raw))
    assert "Sampler: FlowMatchEulerDiscreteScheduler" in ours[0].parameters


def test_img2img_and_inpaint_equal_raw_diffusers(flux_engine: Engine, raw_flux: FluxPipeline) -> None:
    (ours_i2i,) = flux_engine.generate([flux(img2img)])
    raw_i2i = FluxImg2ImgPipeline.from_pipe(raw_flux)(
        "a blue cube",
        image=gradient(),
        strength=0.6,
        generator=_generator(7),
        num_inference_steps=4,
        guidance_scale=0.0,
        height=64,
        width=64,
        max_sequence_length=256,
    ).images[0]
    assert np.array_equal(pixels(ours_i2i[0].image), pixels(raw_i2i))

    (ours_inp,) = flux_engine.generate([flux(inpaint)])
    raw_inp = FluxInpaintPipeline.from_pipe(raw_flux)(
        "a green cube",
        image=gradient(),
        mask_image=square_mask(),
        strength=0.9,
        generator=_generator(7),
        num_inference_steps=4,
        guidance_scale=0.0,
        height=64,
        width=64,
        max_sequence_length=256,
    ).images[0]
    assert np.array_equal(pixels(ours_inp[0].image), pixels(raw_inp))


def test_dev_embeds_guidance_and_reads_512_tokens(flux_engine: Engine, tiny_flux_dev_dir: Path) -> None:
    (ours,) = flux_engine.generate([flux(model="flux-dev", guidance=3.5)])
    raw_pipe = FluxPipeline.from_pretrained(tiny_flux_dev_dir)
    raw_pipe.set_progress_bar_config(disable=True)
    raw = raw_pipe(
        "a red cube", generator=_generator(7), num_inference_steps=4, guidance_scale=3.5, height=64, width=64
    ).images[0]  # diffusers' default max_sequence_length is dev's 512
    assert np.array_equal(pixels(ours[0].image), pixels(raw))
    (other,) = flux_engine.generate([flux(model="flux-dev", guidance=1.5)])
    assert np.abs(pixels(ours[0].image) - pixels(other[0].image)).mean() > 0  # the guidance reached the model


@pytest.mark.parametrize("make", [txt2img, img2img, inpaint], ids=["txt2img", "img2img", "inpaint"])
def test_batch_equals_single_runs(flux_engine: Engine, make) -> None:
    requests = [flux(make, "a cat", seed=11, count=2), flux(make, "a dog", seed=5), flux(make, "a ship", seed=900)]
    assert_batch_equals_single(flux_engine, requests)


def test_negative_prompt_is_true_cfg_equal_to_raw_and_costs_double(flux_engine: Engine, raw_flux: FluxPipeline) -> None:
    request = flux(negative_prompt="blurry dark")
    (ours,) = flux_engine.generate([request])
    raw = raw_flux(
        "a red cube",
        negative_prompt="blurry dark",
        true_cfg_scale=TRUE_CFG_SCALE,
        generator=_generator(7),
        num_inference_steps=4,
        guidance_scale=0.0,
        height=64,
        width=64,
        max_sequence_length=256,
    ).images[0]
    assert np.array_equal(pixels(ours[0].image), pixels(raw))
    (plain,) = flux_engine.generate([flux()])
    assert np.abs(pixels(ours[0].image) - pixels(plain[0].image)).mean() > 0  # not dropped

    # True CFG is per call: requests with and without a negative prompt never share one.
    assert Flux.batch_key(request) != Flux.batch_key(flux())
    with pytest.raises(ValueError, match="must share"):
        flux_engine.generate([request, flux()])
    spec = flux_engine.spec("flux")
    assert Flux.cost(spec, request) == pytest.approx(2 * Flux.cost(spec, flux()), rel=0.01)

    negatives = [flux(negative_prompt="blurry", seed=3, count=2), flux(prompt="a dog", negative_prompt="dark", seed=9)]
    assert_batch_equals_single(flux_engine, negatives)


def test_cancel_stops_at_the_next_step(flux_engine: Engine) -> None:
    steps: list[int] = []
    with pytest.raises(Cancelled):
        flux_engine.generate(
            [flux(steps=12)], on_progress=lambda e: steps.append(e.step), should_cancel=lambda: len(steps) >= 3
        )
    assert len(steps) == 4  # the step running when cancel was seen finishes, no more start


def test_progress_reports_every_step_with_unpacked_linear_previews(flux_engine: Engine) -> None:
    events: list[StepProgress] = []
    flux_engine.generate([flux(count=2, steps=6, width=128)], on_progress=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4, 5, 6] and all(e.total == 6 for e in events)
    with_previews = [e for e in events if e.previews]
    assert [e.step for e in with_previews] == [2, 4]
    # Unpacked to (16, h/8, w/8), then 4x: half the image size, the aspect ratio kept.
    assert all(len(e.previews) == 2 and e.previews[0].size == (64, 32) for e in with_previews)


def test_tiny_vae_previews_when_configured(tiny_flux_dir: Path, tmp_path: Path) -> None:
    from diffusers import AutoencoderTiny

    AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=16,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    ).save_pretrained(tmp_path / "taef1")
    spec = _spec("flux", tiny_flux_dir, preview_vae=str(tmp_path / "taef1"))
    events: list[StepProgress] = []
    Engine({"flux": spec}, device="cpu", preview_every=1).generate([flux(steps=3)], on_progress=events.append)
    previews = [e.previews for e in events if e.previews]
    assert len(previews) == 2 and all(p[0].size == (64, 64) for p in previews)  # decoded at full size


def test_check_refuses_samplers_and_sizes_off_the_16_pixel_grid(flux_engine: Engine) -> None:
    spec = flux_engine.spec("flux")
    assert family_for("flux") is Flux
    with pytest.raises(InvalidRequest, match="The model 'flux' has its own sampler"):
        Flux.check(spec, flux(sampler="Euler a"))
    with pytest.raises(InvalidRequest, match=r"The model 'flux' needs .* multiples of 16, not 72x64"):
        Flux.check(spec, flux(width=72))
    too_long = _spec("flux", Path(spec.source), max_tokens=600)
    with pytest.raises(InvalidRequest, match="'flux' is set to read 600 prompt tokens"):
        Flux.check(too_long, flux())
    Flux.check(spec, flux(width=80, negative_prompt="blurry"))  # negative prompts are welcome


def _seen_by_transformer(engine: Engine, model: str, prompt: str) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def keep(module, args, kwargs) -> None:
        seen.setdefault("text", kwargs["encoder_hidden_states"].clone())
        seen.setdefault("pooled", kwargs["pooled_projections"].clone())

    hook = engine.load(model).core_module().register_forward_pre_hook(keep, with_kwargs=True)
    try:
        engine.generate([flux(prompt=prompt, model=model, steps=1)])
    finally:
        hook.remove()
    return seen


def test_long_prompts_reach_t5_past_clips_77_tokens(flux_engine: Engine) -> None:
    words = ("a red cube in the " * 20).split()  # 100 words: 100 T5 tokens, ~400 CLIP tokens
    changed = [*words[:90], "green", *words[91:]]  # only word 91 differs, far past 77 tokens of either
    first = _seen_by_transformer(flux_engine, "flux", " ".join(words))
    second = _seen_by_transformer(flux_engine, "flux", " ".join(changed))
    assert first["text"].shape[1] == 256  # schnell's T5 length
    assert torch.equal(first["pooled"], second["pooled"])  # CLIP stops at 77
    assert not torch.allclose(first["text"], second["text"])  # T5 read the changed word


def test_max_tokens_from_the_config_sets_the_t5_length(tiny_flux_dir: Path) -> None:
    engine = Engine({"flux": _spec("flux", tiny_flux_dir, max_tokens=100)}, device="cpu", preview_every=0)
    assert _seen_by_transformer(engine, "flux", "a red cube")["text"].shape[1] == 100


def test_cost_is_about_eleven_sd15_pixel_steps_at_1024(tiny_flux_dir: Path) -> None:
    hub = ModelSpec(name="schnell", source="black-forest-labs/not-cached-here", kind="flux", max_tokens=512)
    request = flux(width=1024, height=1024)
    assert 10 < Flux.cost(hub, request) / request.cost < 12  # FLUX.1's shape when no config is at hand
    tiny = _spec("flux", tiny_flux_dir)
    assert Flux.cost(tiny, flux()) < flux().cost  # a tiny transformer is costed as the tiny thing it is


def test_derived_pipelines_share_weights_and_keep_dtype(tiny_flux_dir: Path) -> None:
    engine = Engine({"flux": _spec("flux", tiny_flux_dir)}, device="cpu", dtype="bfloat16")
    loaded = engine.load("flux")
    derived = loaded.pipeline(Mode.INPAINT)
    assert derived.transformer is loaded.pipeline(Mode.TXT2IMG).transformer
    assert derived.transformer.dtype == torch.bfloat16
