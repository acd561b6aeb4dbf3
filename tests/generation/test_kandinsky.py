"""The Kandinsky 2.2 family against the raw diffusers prior and decoder pipelines, on a tiny random-weight model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    KandinskyV22CombinedPipeline,
    KandinskyV22Img2ImgPipeline,
    KandinskyV22InpaintPipeline,
    KandinskyV22Pipeline,
    KandinskyV22PriorPipeline,
)
from PIL import Image

from generation.catalog import family_for
from generation.engine import Engine
from generation.errors import Cancelled, InvalidRequest
from generation.families.kandinsky import HUB_INPAINT_DECODER, HUB_PRIOR, Kandinsky, part_source
from generation.families.unclip import PRIOR_STEP_COST, PRIOR_STEPS
from generation.request import Mode
from generation.results import StepProgress
from generation.specs import ModelSpec
from generation.tiny.kandinsky import build_tiny_kandinsky_decoder, build_tiny_kandinsky_prior
from tests.support.parity import assert_batch_equals_single
from tests.support.requests import gradient, img2img, inpaint, pixels, square_mask, txt2img

STEPS = 4


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _spec(source: Path, name: str = "kandinsky", **changes) -> ModelSpec:
    fields = {"kind": "kandinsky", "steps": STEPS, "guidance": 4.0, "width": 64, "height": 64} | changes
    return ModelSpec(name=name, source=str(source), **fields)


def kandinsky(make=txt2img, prompt: str | None = None, **changes):
    """A request for the tiny model at Kandinsky's guidance of 4."""
    fields = {"model": "kandinsky", "guidance": 4.0} | changes
    return make(prompt, **fields) if prompt is not None else make(**fields)


@pytest.fixture(scope="session")
def tiny_kandinsky_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Kandinsky 2.2 on disk (decoder, prior/, inpaint_decoder/), as `tiny-model --kind kandinsky` writes it."""
    from generation.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-kandinsky", "kandinsky")


@pytest.fixture(scope="module")
def engine(tiny_kandinsky_dir: Path) -> Engine:
    return Engine({"kandinsky": _spec(tiny_kandinsky_dir)}, device="cpu", preview_every=2)


class RawKandinsky:
    """The raw diffusers pipelines, called as KandinskyV22CombinedPipeline calls them: one generator, prior first."""

    def __init__(self, directory: Path) -> None:
        self.prior = KandinskyV22PriorPipeline.from_pretrained(directory / "prior")
        self.decoder = KandinskyV22Pipeline.from_pretrained(directory)
        self.img2img = KandinskyV22Img2ImgPipeline.from_pretrained(directory)
        self.inpaint = KandinskyV22InpaintPipeline.from_pretrained(directory / "inpaint_decoder")
        for pipe in (self.prior, self.decoder, self.img2img, self.inpaint):
            pipe.set_progress_bar_config(disable=True)

    def __call__(self, prompt: str, mode: Mode = Mode.TXT2IMG, seed: int = 7, negative: str | None = None, **inputs):
        generator = _generator(seed)
        embeds, negative_embeds = self.prior(
            prompt, negative_prompt=negative, generator=generator, num_inference_steps=25, guidance_scale=4.0
        ).to_tuple()
        decoder = {Mode.TXT2IMG: self.decoder, Mode.IMG2IMG: self.img2img, Mode.INPAINT: self.inpaint}[mode]
        return decoder(
            image_embeds=embeds,
            negative_image_embeds=negative_embeds,
            generator=generator,
            num_inference_steps=STEPS,
            guidance_scale=4.0,
            height=64,
            width=64,
            **inputs,
        ).images[0]


@pytest.fixture(scope="module")
def raw(tiny_kandinsky_dir: Path) -> RawKandinsky:
    return RawKandinsky(tiny_kandinsky_dir)


def test_txt2img_equals_raw_prior_then_decoder(engine: Engine, raw: RawKandinsky) -> None:
    (ours,) = engine.generate([kandinsky(prompt="a sign that says hello")])
    expected = raw("a sign that says hello")
    assert np.array_equal(pixels(ours[0].image), pixels(expected))
    assert "Sampler: DDPMScheduler" in ours[0].parameters and "CFG scale: 4" in ours[0].parameters

    # diffusers' own composition of the two gives the same picture.
    prior, decoder = raw.prior, raw.decoder
    combined = KandinskyV22CombinedPipeline(
        **decoder.components, **{f"prior_{name}": module for name, module in prior.components.items()}
    )
    combined.set_progress_bar_config(disable=True)
    made = combined(
        "a sign that says hello", generator=_generator(7), num_inference_steps=STEPS, height=64, width=64
    ).images[0]
    assert np.array_equal(pixels(ours[0].image), pixels(made))

    (other,) = engine.generate([kandinsky(prompt="a green dog")])
    assert np.abs(pixels(ours[0].image) - pixels(other[0].image)).mean() > 1  # the prompt reaches the picture


def test_img2img_and_inpaint_equal_raw_decoders(engine: Engine, raw: RawKandinsky) -> None:
    (ours_i2i,) = engine.generate([kandinsky(img2img)])
    expected_i2i = raw("a blue cube", Mode.IMG2IMG, image=gradient(), strength=0.6)
    assert np.array_equal(pixels(ours_i2i[0].image), pixels(expected_i2i))
    assert "Denoising strength: 0.6" in ours_i2i[0].parameters

    (ours_inp,) = engine.generate([kandinsky(inpaint)])
    expected_inp = raw("a green cube", Mode.INPAINT, image=gradient(), mask_image=square_mask())
    assert np.array_equal(pixels(ours_inp[0].image), pixels(expected_inp))
    # Outside the mask the inpainting decoder keeps the picture's latents: nearer the start than inside it.
    start, made = pixels(gradient()), pixels(ours_inp[0].image)
    inside = np.zeros((64, 64), bool)
    inside[16:48, 16:48] = True
    assert np.abs(made - start)[~inside].mean() < np.abs(made - start)[inside].mean()


def test_a_negative_prompt_goes_through_the_prior_as_raw_diffusers(engine: Engine, raw: RawKandinsky) -> None:
    request = kandinsky(negative_prompt="blurry dark")
    (ours,) = engine.generate([request])
    assert np.array_equal(pixels(ours[0].image), pixels(raw("a red cube", negative="blurry dark")))
    (plain,) = engine.generate([kandinsky()])
    assert np.abs(pixels(ours[0].image) - pixels(plain[0].image)).mean() > 1  # not dropped
    assert "Negative prompt: blurry dark" in ours[0].parameters

    # The prior reads negative prompts for a whole call or not at all.
    assert Kandinsky.batch_key(request) != Kandinsky.batch_key(kandinsky())
    with pytest.raises(ValueError, match="must share"):
        engine.generate([request, kandinsky()])
    # Guidance 1 turns the decoder's CFG off; the prior still guides with the negative prompt.
    assert Kandinsky.uses_negative(kandinsky(guidance=1.0))


@pytest.mark.parametrize("make", [txt2img, img2img, inpaint], ids=["txt2img", "img2img", "inpaint"])
def test_batch_equals_single_runs(engine: Engine, make) -> None:
    requests = [
        kandinsky(make, "a cat", seed=11, count=2),
        kandinsky(make, "a dog", seed=5),
        kandinsky(make, "a ship", seed=900),
    ]
    if make is inpaint:  # each request its own picture and mask: the decoder must not mix them up
        requests[1] = requests[1].with_changes(init_image=gradient().rotate(90), mask=square_mask().rotate(45))
    assert_batch_equals_single(engine, requests)


def test_batches_with_negative_prompts_equal_single_runs(engine: Engine) -> None:
    negatives = [
        kandinsky(negative_prompt="blurry", seed=3, count=2),
        kandinsky(prompt="a dog", negative_prompt="dark", seed=9),
    ]
    assert_batch_equals_single(engine, negatives)


def test_embeddings_not_a_multiple_of_16_run_each_prior_alone(tmp_path: Path) -> None:
    # 24-wide embeddings: one generator drawing two rows in turn no longer equals drawing both at once.
    spec = _spec(tmp_path, name="k24")
    loaded = Kandinsky(
        spec,
        torch.device("cpu"),
        torch.float32,
        prior=build_tiny_kandinsky_prior(embedding_dim=24),
        decoder=build_tiny_kandinsky_decoder(embedding_dim=24),
    )
    engine = Engine({}, device="cpu", preview_every=0)
    engine.adopt(loaded)
    requests = [
        kandinsky(model="k24", negative_prompt="blurry", seed=3, count=2),
        kandinsky(model="k24", prompt="a dog", negative_prompt="dark", seed=9),
    ]
    assert_batch_equals_single(engine, requests)
    events: list[StepProgress] = []
    engine.generate(requests, on_progress=events.append)
    assert events[-1].step == events[-1].total == _prior_units(64, 64, negative=True) + STEPS
    assert len(events) == 3 * PRIOR_STEPS + STEPS  # three priors of 25 steps (each moves the bar), one decoder call


def _prior_units(width: int, height: int, negative: bool = False) -> int:
    """The prior's share of the bar, in decoder steps: its FLOPs over a decoder step's at this size."""
    return round(PRIOR_STEPS * PRIOR_STEP_COST * (2 if negative else 1) / (width * height * 1.1))


def test_progress_counts_decoder_steps_after_the_priors_share_with_decoded_previews(engine: Engine) -> None:
    events: list[StepProgress] = []
    engine.generate([kandinsky(count=2, steps=6, width=128)], on_progress=events.append)
    prior = _prior_units(128, 64)  # 25 prior steps cost about 149 decoder steps of a tiny 128x64 picture
    assert prior == 149 and all(e.total == prior + 6 for e in events)
    assert len(events) == PRIOR_STEPS + 6 and events[PRIOR_STEPS - 1].step == prior  # every prior step moved it
    assert [e.step for e in events[PRIOR_STEPS:]] == [prior + k for k in range(1, 7)]  # then one a decoder step
    with_previews = [e for e in events if e.previews]
    assert [e.step - prior for e in with_previews] == [1, 3, 5]  # at even counts (150, 152, 154), never the last
    assert all(len(e.previews) == 2 and e.previews[0].size == (128, 64) for e in with_previews)


def test_at_large_sizes_the_prior_is_a_few_decoder_steps(engine: Engine) -> None:
    events: list[StepProgress] = []
    engine.generate([kandinsky(steps=3, width=512, height=256)], on_progress=events.append)
    prior = _prior_units(512, 256)  # 25 prior steps ≈ 9 decoder steps at 512x256 (2 at 768²)
    assert prior == 9 and _prior_units(768, 768) == 2
    assert [e.step for e in events] == [*range(1, prior + 1), prior + 1, prior + 2, prior + 3]
    assert events[-1].total == prior + 3


@pytest.mark.parametrize("after", [3, PRIOR_STEPS + 2], ids=["in the prior", "in the decoder"])
def test_cancel_stops_after_the_current_step(engine: Engine, after: int) -> None:
    steps: list[int] = []
    with pytest.raises(Cancelled):
        engine.generate(
            [kandinsky(steps=8)], on_progress=lambda e: steps.append(e.step), should_cancel=lambda: len(steps) >= after
        )
    assert len(steps) == after  # the step that saw the cancel was the last to run


def test_check_refuses_samplers_sizes_off_64_and_steps_that_would_not_run(engine: Engine, tmp_path: Path) -> None:
    spec = engine.spec("kandinsky")
    assert family_for("kandinsky") is Kandinsky
    with pytest.raises(InvalidRequest, match="The model 'kandinsky' has its own sampler"):
        Kandinsky.check(spec, kandinsky(sampler="Euler a"))
    with pytest.raises(InvalidRequest, match=r"'kandinsky' needs .* multiples of 64, not 96x64"):
        Kandinsky.check(spec, kandinsky(width=96))
    with pytest.raises(InvalidRequest, match="1 steps at strength 0.6 would run no denoising step"):
        Kandinsky.check(spec, kandinsky(img2img, steps=1))
    Kandinsky.check(spec, kandinsky(inpaint, steps=1))  # inpainting runs every step whatever the strength
    Kandinsky.check(spec, kandinsky(width=128, negative_prompt="blurry"))

    bare = _spec(tmp_path, name="bare")  # a local decoder with nothing beside it
    with pytest.raises(InvalidRequest, match=r"'bare' has no inpainting decoder .* it can do txt2img and img2img"):
        Kandinsky.check(bare, kandinsky(inpaint, model="bare"))


def test_parts_come_from_the_config_beside_a_local_source_or_the_hub(tmp_path: Path) -> None:
    hub = ModelSpec(name="k", source="kandinsky-community/kandinsky-2-2-decoder", kind="kandinsky")
    assert part_source(hub, "prior") == HUB_PRIOR == "kandinsky-community/kandinsky-2-2-prior"
    assert part_source(hub, "inpaint_decoder") == HUB_INPAINT_DECODER
    local = _spec(tmp_path)
    assert part_source(local, "prior") == str(tmp_path / "prior")
    named = _spec(tmp_path, prior="/models/prior", inpaint_decoder="someone/inpaint")
    assert (part_source(named, "prior"), part_source(named, "inpaint_decoder")) == ("/models/prior", "someone/inpaint")


def test_cost_counts_decoder_and_prior_in_sd_pixel_steps(engine: Engine) -> None:
    spec = engine.spec("kandinsky")
    default = kandinsky(width=768, height=768, steps=50)
    sd_image = txt2img(width=512, height=512, steps=25)
    assert 5.0 < Kandinsky.cost(spec, default) / sd_image.cost < 5.4  # about five SD 1.5 images
    # A negative prompt doubles the prior's rows; the decoder costs the same.
    extra = Kandinsky.cost(spec, default.with_changes(negative_prompt="blurry")) - Kandinsky.cost(spec, default)
    assert extra == PRIOR_STEPS * PRIOR_STEP_COST
    assert Kandinsky.cost(spec, default.with_changes(count=3)) == 3 * Kandinsky.cost(spec, default)
    # img2img decodes strength x steps; inpainting decodes every step.
    assert Kandinsky.cost(spec, kandinsky(img2img, steps=10)) < Kandinsky.cost(spec, kandinsky(inpaint, steps=10))


def test_img2img_shares_the_decoder_and_inpainting_loads_its_own(engine: Engine) -> None:
    loaded = engine.load("kandinsky")
    assert loaded.decoder(Mode.IMG2IMG).unet is loaded.core_module()
    assert loaded.decoder(Mode.INPAINT).unet.config.in_channels == 9  # latents, masked-picture latents, mask


def test_non_square_img2img_keeps_its_shape(engine: Engine, raw: RawKandinsky) -> None:
    start = gradient(128, 64)
    (ours,) = engine.generate([kandinsky(mode=Mode.IMG2IMG, width=128, init_image=start, strength=0.6)])
    assert ours[0].image.size == (128, 64)

    def raw_img2img(height: int, width: int) -> Image.Image:
        generator = _generator(7)
        embeds, negative = raw.prior("a red cube", generator=generator, num_inference_steps=25).to_tuple()
        return raw.img2img(
            image_embeds=embeds,
            negative_image_embeds=negative,
            image=start,
            strength=0.6,
            height=height,
            width=width,
            generator=generator,
            num_inference_steps=STEPS,
            guidance_scale=4.0,
        ).images[0]

    # diffusers hands (width, height) to preprocess(image, height, width): asked as is, the picture turns.
    assert raw_img2img(height=64, width=128).size == (64, 128)
    assert np.array_equal(pixels(ours[0].image), pixels(raw_img2img(height=128, width=64)))
