"""Config loading: the example documents every key and loads; mistakes are named."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from bot.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_loads_and_documents_every_key() -> None:
    config = load_config(ROOT / "config.example.toml")
    assert config.generation.default_model == "sd-turbo"
    assert {"sd-turbo", "sd15"} <= set(config.model_map)
    assert config.model_map["sd-turbo"].source == "stabilityai/sd-turbo"
    text = (ROOT / "config.example.toml").read_text()
    documented = set(re.findall(r"^#?\s*(\w+)\s*=", text, re.MULTILINE))
    for section in (config.discord, config.storage, config.generation, config.limits, config.models[0]):
        missing = {f.name for f in fields(section)} - documented
        assert not missing, f"config.example.toml does not document {missing}"


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[storage]\npath = "db.sqlite3"\n[[models]]\nname = "m"\nsource = "./m"\n[generation]\ndefault_model = "m"\n'
    )
    config = load_config(path)
    assert config.storage.path == tmp_path / "db.sqlite3"
    assert config.model_map["m"].source == str(tmp_path / "m")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[discord]\ntokn_env = 'X'\n", r"\[discord\] has unknown key\(s\): tokn_env"),
        ("[gpu]\n", r"unknown section\(s\): gpu"),
        ("[generation]\ndefault_model = 'nope'\n", "default_model is 'nope', but"),
        ("[[models]]\nname = 'a'\n", "needs a `source`"),
        ("[[models]]\nname = 'a'\nsource = 'b'\nkind = 'dalle'\n", "kind must be one of"),
        ("not toml = = =", "is not valid TOML"),
        ("[generation]\ncpu_threads = -1\n", r"cpu_threads must be 0 \(one per core but one\) or more, not -1"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file_and_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    assert load_config(None) == Config()
