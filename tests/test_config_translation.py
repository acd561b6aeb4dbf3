"""`[translation]` and a model's `translate` in the config: every key documented, paths resolved, mistakes named."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from bot.config import ConfigError, TranslationConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_translation_key_is_documented_and_the_example_translates_nothing() -> None:
    text = (ROOT / "config.example.toml").read_text()
    documented = set(re.findall(r"^#?\s*(\w+)\s*=", text, re.MULTILINE))
    assert {f.name for f in fields(TranslationConfig)} | {"translate"} <= documented
    config = load_config(ROOT / "config.example.toml")
    assert config.translation == TranslationConfig() and config.translation.translator("cpu", "auto") is None


def test_translation_loads_with_a_relative_model_and_lower_cased_languages(tmp_path: Path) -> None:
    (tmp_path / "opus").mkdir()
    (tmp_path / "opus" / "config.json").write_text("{}")
    path = tmp_path / "c.toml"
    path.write_text(
        '[translation]\nmodel = "./opus"\nmin_confidence = 1\nlanguages = ["FR", "de"]\n'
        '[[models]]\nname = "m"\nsource = "m/m"\ntranslate = false\n[generation]\ndefault_model = "m"\n'
    )
    config = load_config(path)
    assert config.translation == TranslationConfig(str(tmp_path / "opus"), 1.0, ("fr", "de"))
    assert config.model_map["m"].translate is False
    translator = config.translation.translator("cpu", "float32")
    assert translator is not None and translator.languages == ("fr", "de") and translator.min_confidence == 1.0


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('model = "./missing"', "[translation] model: the translation model"),
        ('model = "x/y"\nmin_confidence = 0', "min_confidence must be above 0 and at most 1, not 0"),
        ('model = "x/y"\nlanguages = ["fr", "klingon"]', "'klingon' is not an ISO 639-1 language code"),
        ("model = 3", "model must be a hub id or a directory in quotes, not 3"),
        ('model = "x/y"\nlanguage = ["fr"]', "[translation] has unknown key(s): language"),
    ],
)
def test_translation_mistakes_are_named(tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[translation]\n{section}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)


def test_a_models_translate_must_be_true_or_false(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[models]]\nname = "m"\nsource = "m/m"\ntranslate = "yes"\n[generation]\ndefault_model = "m"\n')
    with pytest.raises(ConfigError, match=r"\[models #1\] translate must be true or false, not 'yes'"):
        load_config(path)
