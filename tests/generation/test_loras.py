"""LoRAs in the SD family against raw diffusers, on the tiny models and tiny random LoRAs; the catalog's refusals."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from sd_parsers import ParserManager

from generation.catalog import Catalog
from generation.engine import Engine
from generation.errors import InvalidRequest
from generation.families.adapters import AdapterCache
from generation.metadata import read_parameters
from generation.request import Mode
from generation.specs import LoraSpec, ModelSpec
from generation.tiny.lora import write_tiny_lora
from tests.support.requests import img2img, pixels, txt2img


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random LoRAs: two for the tiny SD (a file, a directory), one for the tiny SDXL."""
    root = tmp_path_factory.mktemp("loras")
    return {
        "ink": write_tiny_lora(root / "ink.safetensors", "sd", seed=1),
        "fog": write_tiny_lora(root / "fog", "sd", seed=2),
        "neon": write_tiny_lora(root / "neon.safetensors", "sdxl", seed=3),
    }


@pytest.fixture(scope="module")
def lora_specs(lora_files: dict[str, Path]) -> dict[str, LoraSpec]:
    return {
        "ink": LoraSpec(name="ink", source=str(lora_files["ink"]), weight=0.8),
        "fog": LoraSpec(name="fog", source=str(lora_files["fog"].parent)),  # the directory
        "neon": LoraSpec(name="neon", source=str(lora_files["neon"]), kind="sdxl"),
    }


@pytest.fixture(scope="module")
def models(tiny_sd_dir: Path, tiny_sdxl_dir: Path) -> dict[str, ModelSpec]:
    return {
        "tiny": ModelSpec(name="tiny", source=str(tiny_sd_dir), steps=4, width=64, height=64),
        "tiny-xl": ModelSpec(name="tiny-xl", source=str(tiny_sdxl_dir), kind="sdxl", steps=3, width=64, height=64),
    }


@pytest.fixture(scope="module")
def lora_engine(models: dict[str, ModelSpec], lora_specs: dict[str, LoraSpec]) -> Engine:
    return Engine(models, device="cpu", preview_every=0, loras=lora_specs)


@pytest.fixture(scope="module")
def raw_sd(tiny_sd_dir: Path) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _one(engine: Engine, request) -> np.ndarray:
    (images,) = engine.generate([request])
    return pixels(images[0].image)


def test_a_lora_changes_the_picture_weight_zero_and_none_give_the_base_exactly(lora_engine: Engine) -> None:
    base = _one(lora_engine, txt2img())
    with_ink = _one(lora_engine, txt2img(loras=(("ink", 1.0),)))
    assert np.abs(with_ink - base).max() > 10
    assert np.array_equal(_one(lora_engine, txt2img(loras=(("ink", 0.0),))), base)
    assert np.array_equal(_one(lora_engine, txt2img()), base)  # adapters disabled, not merely weighted
    assert np.array_equal(_one(lora_engine, txt2img(loras=(("ink", 1.0),))), with_ink)  # and back on


def test_output_equals_raw_diffusers_load_lora_weights_and_set_adapters(
    lora_engine: Engine, raw_sd: StableDiffusionPipeline, lora_files: dict[str, Path]
) -> None:
    ours = _one(lora_engine, txt2img("a lighthouse", loras=(("ink", 0.5), ("fog", 0.7))))
    raw_sd.load_lora_weights(str(lora_files["ink"]), adapter_name="ink")
    raw_sd.load_lora_weights(str(lora_files["fog"].parent), adapter_name="fog")
    raw_sd.set_adapters(["fog", "ink"], adapter_weights=[0.7, 0.5])
    try:
        raw = raw_sd(
            "a lighthouse",
            generator=torch.Generator("cpu").manual_seed(7),
            num_inference_steps=4,
            guidance_scale=7.0,
            height=64,
            width=64,
        ).images[0]
    finally:
        raw_sd.delete_adapters(["ink", "fog"])
    assert np.array_equal(ours, pixels(raw))


def test_tags_in_the_prompt_are_not_read_as_words(lora_engine: Engine) -> None:
    tagged = _one(lora_engine, txt2img("a lighthouse <lora:ink:0.5>", loras=(("ink", 0.5),)))
    assert np.array_equal(tagged, _one(lora_engine, txt2img("a lighthouse", loras=(("ink", 0.5),))))


def test_switching_between_resident_loras_loads_each_once(lora_engine: Engine, monkeypatch) -> None:
    lora_engine.unload()  # a fresh model: nothing resident
    pipe = lora_engine.load("tiny").pipeline(Mode.TXT2IMG)
    calls: list[str] = []
    load = pipe.load_lora_weights
    monkeypatch.setattr(pipe, "load_lora_weights", lambda source, **kw: (calls.append(source), load(source, **kw)))
    first: dict[str, np.ndarray] = {}
    for name in ("ink", "fog", "ink", "fog", "ink"):
        picture = _one(lora_engine, txt2img(loras=((name, 1.0),)))
        assert np.array_equal(first.setdefault(name, picture), picture)
    assert len(calls) == 2 and lora_engine.resident_loras == {"ink", "fog"}


def test_the_least_recently_used_lora_is_unloaded_past_capacity(lora_engine: Engine) -> None:
    lora_engine.unload()
    ink = _one(lora_engine, txt2img(loras=(("ink", 1.0),)))
    adapters: AdapterCache = lora_engine.load("tiny").adapters
    adapters.capacity = 1
    try:
        loads = adapters.loads
        _one(lora_engine, txt2img(loras=(("fog", 1.0),)))
        assert lora_engine.resident_loras == {"fog"}
        assert np.array_equal(_one(lora_engine, txt2img(loras=(("ink", 1.0),))), ink)  # reloaded: the same
        assert adapters.loads == loads + 2 and lora_engine.resident_loras == {"ink"}
        # Two wanted at once go over capacity for that call rather than evict one of them.
        _one(lora_engine, txt2img(loras=(("ink", 1.0), ("fog", 1.0))))
        assert lora_engine.resident_loras == {"ink", "fog"}
    finally:
        adapters.capacity = 4


def test_img2img_uses_the_adapters_of_the_shared_modules(lora_engine: Engine) -> None:
    base = _one(lora_engine, img2img())
    assert np.abs(_one(lora_engine, img2img(loras=(("ink", 1.0),))) - base).max() > 10
    assert np.array_equal(_one(lora_engine, img2img()), base)


def test_sdxl_takes_its_own_loras(lora_engine: Engine) -> None:
    base = _one(lora_engine, txt2img(model="tiny-xl", steps=3))
    neon = _one(lora_engine, txt2img(model="tiny-xl", steps=3, loras=(("neon", 1.0),)))
    assert np.abs(neon - base).max() > 10
    with pytest.raises(InvalidRequest, match="'ink' is for sd models, not sdxl"):
        lora_engine.generate([txt2img(model="tiny-xl", loras=(("ink", 1.0),))])


def test_batch_key_separates_adapter_sets_and_order_does_not_matter(lora_engine: Engine) -> None:
    plain, ink = txt2img(), txt2img(loras=(("ink", 1.0),))
    assert plain.batch_key != ink.batch_key != txt2img(loras=(("ink", 0.5),)).batch_key
    both = txt2img(loras=(("ink", 1.0), ("fog", 0.5)))
    assert both == txt2img(loras=[["fog", 0.5], ["ink", 1]])  # as stored in JSON, in any order
    assert both.params()["loras"] == [["fog", 0.5], ["ink", 1.0]]
    assert type(both).from_params(both.params()) == both
    with pytest.raises(ValueError, match="must share"):
        lora_engine.generate([plain, ink])
    with pytest.raises(InvalidRequest, match="'ink' is given twice"):
        txt2img(loras=(("ink", 1.0), ("ink", 0.5)))
    with pytest.raises(InvalidRequest, match="between -5 and 5, not 9"):
        txt2img(loras=(("ink", 9.0),))


def test_the_catalog_refuses_unknown_wrong_kind_and_too_many(
    models: dict[str, ModelSpec], lora_specs: dict[str, LoraSpec]
) -> None:
    catalog = Catalog(models, "tiny", loras=lora_specs, max_loras=2)
    catalog.check(txt2img(loras=(("ink", 1.0), ("fog", 1.0))))
    with pytest.raises(InvalidRequest, match=r"no LoRA called 'inc'\. Did you mean: ink\? LoRAs for 'tiny': ink, fog"):
        catalog.check(txt2img(loras=(("inc", 1.0),)))
    with pytest.raises(InvalidRequest, match="'neon' is made for sdxl models, and the model 'tiny' is of kind sd"):
        catalog.check(txt2img(loras=(("neon", 1.0),)))
    with pytest.raises(InvalidRequest, match="uses 3 LoRAs; the limit is 2 at once"):
        catalog.check(txt2img(loras=(("ink", 1.0), ("fog", 1.0), ("x", 1.0))))
    if_model = ModelSpec(name="if", source="x", kind="if", width=64, height=64)
    with pytest.raises(InvalidRequest, match=r"'if' \(if\) cannot use LoRAs"):
        Catalog([if_model], loras=lora_specs).check(txt2img(model="if", steps=4, loras=(("ink", 1.0),)))
    assert [lora.name for lora in catalog.loras_for("tiny")] == ["ink", "fog"]
    assert [lora.name for lora in catalog.loras_for("tiny-xl")] == ["neon"]
    assert [lora.name for lora in catalog.loras_for(None)] == ["ink", "fog"]  # the default model's


def _a1111_hash(path: Path) -> str:
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header :]).hexdigest()[:12]


def test_png_parameters_carry_the_tags_and_a1111_lora_hashes(lora_engine: Engine, lora_files) -> None:
    request = txt2img("a harbour <lora:ink:0.5>, dusk <lora:fog:1>", loras=(("fog", 1.0), ("ink", 0.5)))
    (images,) = lora_engine.generate([request])
    text = read_parameters(images[0].png())
    assert text.splitlines()[0] == "a harbour <lora:ink:0.5>, dusk <lora:fog:1>"
    expected = f'Lora hashes: "fog: {_a1111_hash(lora_files["fog"])}, ink: {_a1111_hash(lora_files["ink"])}"'
    assert text.splitlines()[-1].endswith(expected)
    with Image.open(io.BytesIO(images[0].png())) as image:
        info = ParserManager().parse(image)
    # sd-parsers 0.6 reads the prompt (tags included) and every plain field; A1111's quoted `Lora hashes`
    # value holds ':' and ',' which its field splitter cannot take, so that one field is not in its metadata.
    assert info.full_prompt == "a harbour <lora:ink:0.5>, dusk <lora:fog:1>"
    assert info.samplers[0].parameters == {"cfg_scale": "7", "seed": "7", "steps": "4"}
    assert info.samplers[0].model.name == "tiny" and info.metadata["Size"] == "64x64"
