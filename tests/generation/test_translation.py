"""Prompts in any language: lingua's detection, tiny MarianMT / M2M100 translations against transformers' own
generate, and the engine (pixels, PNG parameters) with and without a translation model."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sd_parsers import ParserManager
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, M2M100Tokenizer, MarianTokenizer

from generation.engine import Engine
from generation.results import GeneratedImage
from generation.specs import KIND_DEFAULTS, ModelSpec
from generation.tiny import write_tiny_model
from generation.tiny.translation import write_tiny_m2m100
from generation.translation import MIN_CONFIDENCE, Translator, check_languages, reads_english
from tests.support.parity import assert_batch_equals_single
from tests.support.requests import pixels, txt2img
from tests.support.translation import raw_translation

FRENCH = "une forêt enchantée avec des champignons lumineux, peinture à l'huile"
GERMAN = "ein Hund, der im Park bei Nacht spielt, fotorealistisch"
ENGLISH = "a cat sitting on a roof at sunset, highly detailed"
# A1111 reads a `Key: "quoted, value"` field with this pattern and json-unquotes it (modules/infotext_utils.py).
A1111_FIELD = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`imagine-bot tiny-model DIR --kind translation`: a tiny multilingual-to-English MarianMT."""
    return write_tiny_model(tmp_path_factory.mktemp("translation") / "marian", "translation")


@pytest.fixture(scope="module")
def m2m100_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_m2m100(tmp_path_factory.mktemp("translation") / "m2m100")


def _translator(source: Path, **settings) -> Translator:
    # Two languages besides English keep lingua small and quick; the detection rule is the same with all 75.
    return Translator(str(source), device="cpu", **({"languages": ("fr", "de")} | settings))


def test_tiny_models_load_back_with_the_real_tokenizer_classes(marian_dir: Path, m2m100_dir: Path) -> None:
    marian = AutoTokenizer.from_pretrained(marian_dir)
    assert isinstance(marian, MarianTokenizer) and marian.source_lang == "mul"
    m2m100 = AutoTokenizer.from_pretrained(m2m100_dir)
    assert isinstance(m2m100, M2M100Tokenizer) and "de" in m2m100.lang_code_to_id
    assert AutoModelForSeq2SeqLM.from_pretrained(marian_dir).config.model_type == "marian"


def test_a_french_prompt_is_translated_as_transformers_translates_it(marian_dir: Path) -> None:
    translator = _translator(marian_dir)
    (translation,) = translator.translate([txt2img(FRENCH, negative_prompt="blurry")])
    english = raw_translation(marian_dir, FRENCH)
    assert english and english != FRENCH  # gibberish from random weights, but not the typed text
    assert translation is not None and translation.language == "French"
    assert (translation.prompt, translation.original_prompt) == (english, FRENCH)
    assert translation.translated_prompt == english
    assert translation.negative_prompt == "blurry" and translation.translated_negative is None  # English stays


def test_english_and_unsure_texts_are_left_as_typed(marian_dir: Path) -> None:
    translator = _translator(marian_dir)
    texts = [ENGLISH, "chat", "1girl, 8k, (((masterpiece)))", "<lora:glow:1> BREAK 42"]
    assert translator.translate([txt2img(text) for text in texts]) == [None] * len(texts)
    assert translator.detect(FRENCH) is not None and translator.detect(ENGLISH) is None
    # Past the threshold nothing is sure enough: the same French prompt is used as typed.
    assert _translator(marian_dir, min_confidence=0.9999).translate([txt2img(FRENCH)]) == [None]
    assert MIN_CONFIDENCE == 0.5


def test_a1111_syntax_stays_and_only_the_words_between_are_translated(marian_dir: Path) -> None:
    typed = "(une forêt enchantée:1.3) avec des champignons <lora:glow:0.5> BREAK [peinture à l'huile]"
    (translation,) = _translator(marian_dir).translate([txt2img(typed)])
    assert translation is not None
    forest, mushrooms, paint = (
        raw_translation(marian_dir, t) for t in ("une forêt enchantée", "avec des champignons", "peinture à l'huile")
    )
    assert translation.prompt == f"({forest}:1.3) {mushrooms} <lora:glow:0.5> BREAK [{paint}]"


def test_m2m100_is_told_each_texts_language(m2m100_dir: Path) -> None:
    assert raw_translation(m2m100_dir, FRENCH, "fr") != raw_translation(
        m2m100_dir, FRENCH, "de"
    )  # the code given changes the output
    translator = _translator(m2m100_dir)
    french, german = translator.translate([txt2img(FRENCH), txt2img(GERMAN, negative_prompt=FRENCH)])
    assert french is not None and french.prompt == raw_translation(m2m100_dir, FRENCH, "fr")
    assert german is not None and german.language == "German"
    assert german.prompt == raw_translation(m2m100_dir, GERMAN, "de") and german.negative_prompt == raw_translation(
        m2m100_dir, FRENCH, "fr"
    )


def test_a_one_language_marian_translates_only_its_language(tmp_path: Path, marian_dir: Path) -> None:
    french_only = tmp_path / "fr-en"
    french_only.mkdir()
    for file in marian_dir.iterdir():
        (french_only / file.name).write_bytes(file.read_bytes())
    config = json.loads((french_only / "tokenizer_config.json").read_text())
    (french_only / "tokenizer_config.json").write_text(json.dumps(config | {"source_lang": "fr"}))
    french, german = _translator(french_only).translate([txt2img(FRENCH), txt2img(GERMAN)])
    assert french is not None and german is None  # opus-mt-fr-en would turn German into nonsense


def test_a_model_that_cannot_load_leaves_prompts_as_typed_and_says_so_once(tmp_path: Path, caplog) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    translator = _translator(broken)
    with caplog.at_level(logging.ERROR, logger="generation.translation"):
        assert translator.translate([txt2img(FRENCH)]) == [None]
        assert translator.translate([txt2img(FRENCH)]) == [None]
    assert len([r for r in caplog.records if "could not be loaded" in r.getMessage()]) == 1


def test_every_kind_here_reads_english_unless_the_spec_says_otherwise() -> None:
    assert all(
        reads_english(ModelSpec(name="m", source="s", kind=kind)) for kind in ("sd", "sdxl", "if", "flux", "sd3")
    )
    assert all(defaults.translate is not None for defaults in KIND_DEFAULTS.values())
    assert not reads_english(ModelSpec(name="m", source="s", translate=False))
    assert check_languages(["FR", " de"]) == ("fr", "de")
    with pytest.raises(ValueError, match="'xx' is not an ISO 639-1"):
        check_languages(["fr", "xx"])


@pytest.fixture(scope="module")
def specs(tiny_sd_dir: Path) -> dict[str, ModelSpec]:
    return {
        "tiny": ModelSpec(name="tiny", source=str(tiny_sd_dir), steps=4, width=64, height=64),
        "as-typed": ModelSpec(name="as-typed", source=str(tiny_sd_dir), steps=4, width=64, height=64, translate=False),
    }


@pytest.fixture(scope="module")
def plain_engine(specs: dict[str, ModelSpec]) -> Engine:
    return Engine(specs, device="cpu", preview_every=0)


@pytest.fixture(scope="module")
def translating_engine(specs: dict[str, ModelSpec], marian_dir: Path) -> Engine:
    return Engine(specs, device="cpu", preview_every=0, translator=_translator(marian_dir))


def _same(a: GeneratedImage, b: GeneratedImage) -> bool:
    return np.array_equal(pixels(a.image), pixels(b.image)) and a.parameters == b.parameters


def test_without_a_translation_nothing_changes(plain_engine: Engine, translating_engine: Engine) -> None:
    french = txt2img(FRENCH, negative_prompt="blurry")
    (plain,) = plain_engine.generate([french])
    assert plain[0].translation is None and plain[0].parameters.startswith(FRENCH + "\n")
    assert "Translated from" not in plain[0].parameters
    # With a translation model: English prompts, and models that read every language, are made exactly as before.
    for request in (txt2img(ENGLISH), french.with_changes(model="as-typed")):
        (before,) = plain_engine.generate([request])
        (after,) = translating_engine.generate([request])
        assert _same(before[0], after[0]) and after[0].translation is None


def test_a_translated_prompt_makes_the_english_prompts_picture(
    plain_engine: Engine, translating_engine: Engine, marian_dir: Path
) -> None:
    english = raw_translation(marian_dir, FRENCH)
    (translated,) = translating_engine.generate([txt2img(FRENCH, negative_prompt="blurry", count=2)])
    (expected,) = plain_engine.generate([txt2img(english, negative_prompt="blurry", count=2)])
    assert [pixels(i.image).tolist() for i in translated] == [pixels(i.image).tolist() for i in expected]
    # In a batch each request keeps its own texts: a translated one beside one used as typed.
    assert_batch_equals_single(translating_engine, [txt2img(FRENCH, count=2), txt2img(ENGLISH, seed=3)])

    image = translated[0]
    assert image.translation is not None and image.translation.original_prompt == FRENCH
    prompt, negative, settings = image.parameters.split("\n")
    assert prompt == english and negative == "Negative prompt: blurry"
    assert settings.endswith(f'Translated from: French, Original prompt: "{FRENCH}"')
    fields = {key: value for key, value in A1111_FIELD.findall(settings)}
    assert json.loads(fields["Original prompt"]) == FRENCH  # A1111 unquotes it, comma and all

    with Image.open(io.BytesIO(image.png())) as png:
        parsed = ParserManager().parse(png)
    assert parsed.full_prompt == english and parsed.full_negative_prompt == "blurry"
    assert parsed.samplers[0].parameters == {"cfg_scale": "7", "seed": "7", "steps": "4"}
    assert parsed.metadata["Translated from"] == "French"
