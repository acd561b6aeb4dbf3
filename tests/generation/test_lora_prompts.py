"""`<lora:NAME:WEIGHT>` tags at the edge (generation.loras, make_request), and FLUX LoRAs on the tiny FLUX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from generation.engine import Engine
from generation.errors import InvalidRequest
from generation.loras import lora_tags, loras_for_prompt, strip_lora_tags
from generation.options import UserOptions, make_request
from generation.specs import LoraSpec, ModelSpec
from generation.tiny.flux import build_tiny_flux
from generation.tiny.lora import write_tiny_lora
from tests.support.requests import pixels, txt2img

KNOWN = {"ink": LoraSpec(name="ink", source="/x/ink.safetensors", weight=0.8), "fog": LoraSpec(name="fog", source="/x")}
TINY = ModelSpec(name="tiny", source="/x", steps=4, width=64, height=64)


def test_tags_are_read_with_or_without_a_weight_and_stripped_for_the_encoders() -> None:
    prompt = "a harbour <lora:ink:0.5>, dusk <LORA:fog> <lora: my style : -1,5 >"
    assert lora_tags(prompt) == [("ink", 0.5), ("fog", None), ("my style", -1.5)]
    assert strip_lora_tags(prompt) == "a harbour , dusk"
    assert strip_lora_tags("two  spaces\nand a line") == "two  spaces\nand a line"  # untouched without tags


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("x <lora:ink:lots>", "The weight of LoRA 'ink' must be a number such as 0.8, not 'lots'"),
        ("x <lora:ink:7>", "between -5 and 5, not 7"),
        ("x <lora::1>", "names no LoRA"),
        ("x <lora:ink:1:0.5>", "more than a name and a weight; write it as `<lora:ink:0.8>`"),
        ("x <lora:ink:0.5> <lora:ink:1>", "'ink' is given twice, with weights 0.5 and 1: keep one"),
    ],
)
def test_bad_tags_are_refused_by_name(prompt: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        loras_for_prompt(prompt, (), KNOWN)


def test_loras_picked_beside_the_prompt_become_tags_with_their_default_weight() -> None:
    prompt, loras = loras_for_prompt("a cat <lora:fog>", [("ink", None)], KNOWN)
    assert prompt == "a cat <lora:fog> <lora:ink:0.8>" and loras == (("fog", 1.0), ("ink", 0.8))
    # The same LoRA in a tag and beside it: no weight beside adds nothing; another weight is refused.
    assert loras_for_prompt("a <lora:ink:0.3>", [("ink", None)], KNOWN) == ("a <lora:ink:0.3>", (("ink", 0.3),))
    with pytest.raises(InvalidRequest, match="given twice, with weights 0.3 and 1"):
        loras_for_prompt("a <lora:ink:0.3>", [("ink", 1.0)], KNOWN)
    # A name nobody configured keeps weight 1 here; the catalog refuses it by name before anything is stored.
    assert loras_for_prompt("<lora:nope> a", (), KNOWN)[1] == (("nope", 1.0),)


# A member's trained LoRA by its plain name (bot.loras.usable_loras): it resolves to its unique name.
BALL = LoraSpec(name="Red ball#12", source="/x/12.safetensors", triggers=("sks",))
TRAINED = KNOWN | {"Red ball": BALL, "Red ball#12": BALL}


def test_plain_names_resolve_to_their_canonical_name_in_the_loras_and_the_tags() -> None:
    prompt, loras = loras_for_prompt("a sks ball <lora:Red ball:0.8>, <LORA: ink >", [], TRAINED)
    assert prompt == "a sks ball <lora:Red ball#12:0.8>, <LORA: ink >"  # only the tag that needed it changes
    assert loras == (("Red ball#12", 0.8), ("ink", 0.8))
    assert loras_for_prompt("x <lora:Red ball:-1,5>", (), TRAINED)[0] == "x <lora:Red ball#12:-1.5>"
    assert loras_for_prompt("x <lora:Red ball>", (), TRAINED) == ("x <lora:Red ball#12>", (("Red ball#12", 1.0),))
    # Picked beside the prompt by its plain name: the added tag says the unique name.
    assert loras_for_prompt("a ball", [("Red ball", 0.5)], TRAINED) == (
        "a ball <lora:Red ball#12:0.5>",
        (("Red ball#12", 0.5),),
    )
    # Beside a tag of the same LoRA under its other name: nothing is added, another weight is refused.
    assert loras_for_prompt("a <lora:Red ball#12:0.3>", [("Red ball", None)], TRAINED)[1] == (("Red ball#12", 0.3),)
    with pytest.raises(InvalidRequest, match="'Red ball' is given twice, with weights 0.3 and 1: keep one"):
        loras_for_prompt("a <lora:Red ball#12:0.3> <lora:Red ball:1>", (), TRAINED)


def test_a_prompt_whose_tags_need_no_rewrite_stays_byte_identical() -> None:
    for prompt in ("  two  spaces <LoRa: ink : 0,5 >\n", "a <lora:Red ball#12:0.3>  b ", "<lora:nope> x", "plain "):
        assert loras_for_prompt(prompt, (), TRAINED)[0] == prompt


def test_make_request_keeps_the_tags_in_the_prompt_and_fills_request_loras() -> None:
    options = UserOptions(prompt="a cat <lora:ink:0.5>", seed=1, loras=(("fog", 0.25),))
    request = make_request(TINY, options, loras=KNOWN)
    assert request.prompt == "a cat <lora:ink:0.5> <lora:fog:0.25>"
    assert request.loras == (("fog", 0.25), ("ink", 0.5))
    assert make_request(TINY, UserOptions(prompt="plain"), loras=KNOWN).loras == ()


@pytest.fixture(scope="module")
def flux_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("flux-lora")
    build_tiny_flux().save_pretrained(root / "flux")
    spec = ModelSpec(name="flux", source=str(root / "flux"), kind="flux", steps=2, guidance=0.0, width=64, height=64)
    lora = LoraSpec(name="glow", source=str(write_tiny_lora(root / "glow.safetensors", "flux")), kind="flux")
    return Engine({"flux": spec}, device="cpu", preview_every=0, loras={"glow": lora})


def test_flux_loras_change_the_picture_and_their_tags_are_not_read_as_words(flux_engine: Engine) -> None:
    def picture(prompt: str, **changes) -> np.ndarray:
        request = txt2img(prompt, model="flux", steps=2, guidance=0.0, **changes)
        return pixels(flux_engine.generate([request])[0][0].image)

    base = picture("a lamp")
    glowing = picture("a lamp <lora:glow:1>", loras=(("glow", 1.0),))
    assert np.abs(glowing - base).max() > 10
    assert np.array_equal(picture("a lamp", loras=(("glow", 1.0),)), glowing)  # the tag is stripped for CLIP/T5
    assert np.array_equal(picture("a lamp"), base)  # adapters off again


def test_a_lora_file_that_does_not_exist_is_named(tmp_path: Path, tiny_sd_dir: Path) -> None:
    spec = ModelSpec(name="tiny", source=str(tiny_sd_dir), steps=1, width=64, height=64)
    missing = LoraSpec(name="gone", source=str(tmp_path / "gone.safetensors"))
    engine = Engine({"tiny": spec}, device="cpu", preview_every=0, loras={"gone": missing})
    with pytest.raises(Exception, match=r"The LoRA 'gone' is not available: its file .*gone.safetensors is missing"):
        engine.generate([txt2img(steps=1, loras=(("gone", 1.0),))])
