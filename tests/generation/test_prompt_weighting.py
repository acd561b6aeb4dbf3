"""A1111 prompt weights, BREAK and long prompts on the tiny SD and SDXL models, against raw diffusers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoPipelineForText2Image
from hypothesis import given, settings
from hypothesis import strategies as st

from generation.engine import Engine
from generation.families.prompt_embeds import prompt_embeddings
from generation.prompt_syntax import parse_prompt
from generation.specs import ModelSpec
from tests.support.requests import img2img, pixels, txt2img

CHUNK = 77
# With the tiny tokenizer every character is a token: about 120 tokens, the last ones well past 77.
LONG = "a red cube on a table, " * 6 + "under a blue sky"
LONG_OTHER_END = "a red cube on a table, " * 6 + "under a green sea"
# Syntax, chunk markers typed as text and long runs, mixed at random.
PROMPT_SOUP = st.lists(
    st.sampled_from([*"ab :.1-()[]\\<>,!", "BREAK", "<lora:x:1>", "<|endoftext|>", "<|startoftext|>", "word " * 20]),
    max_size=12,
).map("".join)


@pytest.fixture(scope="module")
def engines(tiny_sd_dir, tiny_sdxl_dir) -> dict[str, Engine]:
    """One engine per model, so tests switching between them reload nothing."""
    specs = {
        "tiny": ModelSpec(name="tiny", source=str(tiny_sd_dir)),
        "tiny-xl": ModelSpec(name="tiny-xl", source=str(tiny_sdxl_dir), kind="sdxl"),
    }
    return {name: Engine({name: spec}, device="cpu") for name, spec in specs.items()}


@pytest.fixture(scope="module")
def raw(tiny_sd_dir, tiny_sdxl_dir):
    """Raw diffusers pipelines by model name, to compare with."""
    pipes = {}
    for name, directory in (("tiny", tiny_sd_dir), ("tiny-xl", tiny_sdxl_dir)):
        pipes[name] = AutoPipelineForText2Image.from_pretrained(directory)
        pipes[name].set_progress_bar_config(disable=True)
    return pipes


def _raw_image(pipe, **arguments):
    fixed = {"num_inference_steps": 4, "guidance_scale": 7.0, "height": 64, "width": 64}
    return pipe(generator=torch.Generator("cpu").manual_seed(7), **fixed, **arguments).images[0]


def _plain(pipe, text: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Embeddings (and SDXL's pooled) as diffusers encodes the text itself."""
    with torch.no_grad():
        encoded = pipe.encode_prompt(
            prompt=text, device=torch.device("cpu"), num_images_per_prompt=1, do_classifier_free_guidance=False
        )
    return encoded[0], encoded[2] if len(encoded) == 4 else None


def _ours(pipe, text: str) -> dict:
    return prompt_embeddings(pipe, [parse_prompt(text)], None, zero_empty=False)


def _tokens(pipe, text: str) -> int:
    return len(pipe.tokenizer.tokenize(text))


def _image(engines: dict[str, Engine], prompt: str, model: str = "tiny", **changes) -> np.ndarray:
    (images,) = engines[model].generate([txt2img(prompt, model=model, **changes)])
    return pixels(images[0].image)


@pytest.mark.parametrize("model", ["tiny", "tiny-xl"])
def test_a_weight_changes_only_that_words_token_positions(raw, model: str) -> None:
    pipe = raw[model]
    plain, plain_pooled = _plain(pipe, "a red cube")
    weighted = _ours(pipe, "a (red:1.3) cube")
    start = 1 + _tokens(pipe, "a")  # after BOS
    red = list(range(start, start + _tokens(pipe, "red")))
    # CLIP's attention is causal and the weight is applied after encoding: every other position is untouched.
    changed = (weighted["prompt_embeds"] != plain).any(-1)[0]
    assert changed.nonzero().flatten().tolist() == red
    if plain_pooled is not None:
        assert torch.equal(weighted["pooled_prompt_embeds"], plain_pooled)  # as A1111: pooled is unweighted


def test_a_lower_weight_leaves_the_tokens_before_it(raw) -> None:
    pipe = raw["tiny"]
    plain, _ = _plain(pipe, "a red cube")
    lower = _ours(pipe, "a [red] cube")["prompt_embeds"]
    start = 1 + _tokens(pipe, "a")
    difference = (lower - plain).abs().amax(-1)[0]
    # compel blends toward the prompt with "red" masked out: the causal mask keeps what comes before it.
    assert difference[:start].max() < 1e-6
    assert (difference[start : start + _tokens(pipe, "red")] > 1e-3).all()


@pytest.mark.parametrize("model", ["tiny", "tiny-xl"])
def test_a_prompt_without_syntax_gives_todays_pixels(engines: dict[str, Engine], raw, model: str) -> None:
    negative = "blurry" if model == "tiny" else ""  # SDXL: without one, zeros (force_zeros_for_empty_prompt)
    ours = _image(engines, "a red cube", model=model, negative_prompt=negative)
    theirs = _raw_image(raw[model], prompt="a red cube", negative_prompt=negative or None)
    assert np.array_equal(ours, pixels(theirs))


@pytest.mark.parametrize("model", ["tiny", "tiny-xl"])
@pytest.mark.parametrize("prompt", ["a (red:1.0) cube", "a ([red]) cube", "a red cube <lora:style:0.7>"])
def test_neutral_syntax_gives_the_plain_words_pixels(engines: dict[str, Engine], raw, model: str, prompt: str) -> None:
    assert np.array_equal(_image(engines, prompt, model=model), pixels(_raw_image(raw[model], prompt="a red cube")))


def test_escaped_brackets_are_words(engines: dict[str, Engine], raw) -> None:
    ours = _image(engines, r"a \(red\) cube")
    assert np.array_equal(ours, pixels(_raw_image(raw["tiny"], prompt="a (red) cube")))


@pytest.mark.parametrize("model", ["tiny", "tiny-xl"])
def test_a_weight_changes_the_picture(engines: dict[str, Engine], model: str) -> None:
    plain = _image(engines, "a red cube", model=model)
    weighted = _image(engines, "a (red:1.5) [cube]", model=model)
    assert np.abs(plain - weighted).mean() > 0.1


def test_a_long_prompt_is_not_truncated(engines: dict[str, Engine], raw) -> None:
    pipe = raw["tiny"]
    assert 110 <= _tokens(pipe, LONG) <= 130 and _tokens(pipe, LONG_OTHER_END) > CHUNK + 10
    # Today's diffusers path truncates at 77: the two endings give one picture there.
    assert np.array_equal(
        pixels(_raw_image(pipe, prompt=LONG, negative_prompt="blurry")),
        pixels(_raw_image(pipe, prompt=LONG_OTHER_END, negative_prompt="blurry")),
    )
    one = _image(engines, LONG, negative_prompt="blurry")
    other = _image(engines, LONG_OTHER_END, negative_prompt="blurry")
    assert np.abs(one - other).mean() > 0.1
    embeds = _ours(pipe, LONG)["prompt_embeds"]
    assert embeds.shape[1] == 2 * CHUNK
    # The first chunk is exactly what diffusers encodes from the truncated prompt.
    assert torch.equal(embeds[:, :CHUNK], _plain(pipe, LONG)[0])


@pytest.mark.parametrize("model", ["tiny", "tiny-xl"])
def test_break_starts_a_new_chunk(raw, model: str) -> None:
    pipe = raw[model]
    ours = _ours(pipe, "a red cube BREAK blue sky")
    assert ours["prompt_embeds"].shape[1] == 2 * CHUNK
    # Each chunk is encoded alone, as A1111 does.
    assert torch.equal(ours["prompt_embeds"][:, :CHUNK], _plain(pipe, "a red cube")[0])
    assert torch.equal(ours["prompt_embeds"][:, CHUNK:], _plain(pipe, "blue sky")[0])
    if model == "tiny-xl":
        assert torch.equal(ours["pooled_prompt_embeds"], _plain(pipe, "a red cube")[1])  # the first chunk's
    assert _ours(pipe, "BREAK a")["prompt_embeds"].shape[1] == 2 * CHUNK
    assert _ours(pipe, "a BREAK")["prompt_embeds"].shape[1] == CHUNK


def test_sdxl_without_a_negative_prompt_keeps_zero_negatives(engines: dict[str, Engine], raw) -> None:
    pipe = raw["tiny-xl"]
    ours = _image(engines, "a (red:1.3) cube", model="tiny-xl")
    embeds = _ours(pipe, "a (red:1.3) cube")
    # Raw diffusers given only the positive embeddings zeroes the negatives itself (force_zeros_for_empty_prompt).
    theirs = _raw_image(pipe, **embeds)
    assert np.array_equal(ours, pixels(theirs))


@pytest.mark.parametrize("model", ["tiny", "tiny-xl"])
def test_a_mixed_batch_equals_single_runs(engines: dict[str, Engine], model: str) -> None:
    requests = [
        txt2img(LONG, model=model, seed=11, negative_prompt="blurry, (ugly:1.2)"),
        txt2img("a (cat:1.2) BREAK on a mat", model=model, seed=5, count=2),
        txt2img("a dog", model=model, seed=900, negative_prompt="blurry"),
    ]
    batched = engines[model].generate(requests)
    for request, batch_images in zip(requests, batched, strict=True):
        (single_images,) = engines[model].generate([request])
        for b, s in zip(batch_images, single_images, strict=True):
            # Shorter prompts are repeated whole to the batch's length, which cross-attention cannot tell
            # from the prompt once; batched kernels round a pixel one level apart at most.
            difference = np.abs(pixels(b.image) - pixels(s.image))
            assert difference.max() <= 1 and difference.mean() < 0.01


def test_img2img_takes_weighted_prompts(engines: dict[str, Engine]) -> None:
    (images,) = engines["tiny-xl"].generate([img2img("a (blue:1.4) cube BREAK " + LONG, model="tiny-xl")])
    assert images[0].image.size == (64, 64)


@settings(max_examples=30, deadline=None)
@given(prompt=PROMPT_SOUP, negative=PROMPT_SOUP)
def test_any_prompt_encodes(raw, prompt: str, negative: str) -> None:
    arguments = prompt_embeddings(raw["tiny-xl"], [parse_prompt(prompt)], [parse_prompt(negative)], zero_empty=True)
    assert arguments["prompt_embeds"].shape == arguments["negative_prompt_embeds"].shape
    assert arguments["prompt_embeds"].shape[1] % CHUNK == 0
