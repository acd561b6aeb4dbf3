"""`[[loras]]` in the config: every key documented, relative sources resolved, mistakes named."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from generation.specs import LoraSpec

ROOT = Path(__file__).resolve().parents[1]


def test_every_lora_key_and_max_loras_are_documented() -> None:
    text = (ROOT / "config.example.toml").read_text()
    documented = set(re.findall(r"^#?\s*(\w+)\s*=", text, re.MULTILINE))
    assert {f.name for f in fields(LoraSpec)} | {"max_loras"} <= documented
    assert load_config(ROOT / "config.example.toml").generation.max_loras == 3


def test_loras_load_with_defaults_and_relative_sources(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[generation]\nmax_loras = 2\n[[loras]]\nname = "ink"\nsource = "./loras/ink.safetensors"\n'
        '[[loras]]\nname = "neon glow"\nsource = "user/neon"\nkind = "sdxl"\nweight = 0.7\n'
        'triggers = ["neon", "glow"]\ndescription = "Neon"\nweight_name = "neon.safetensors"\n'
    )
    config = load_config(path)
    assert config.generation.max_loras == 2
    assert config.lora_map["ink"] == LoraSpec(name="ink", source=str(tmp_path / "loras" / "ink.safetensors"))
    assert config.lora_map["neon glow"] == LoraSpec(
        name="neon glow",
        source="user/neon",
        kind="sdxl",
        weight=0.7,
        triggers=("neon", "glow"),
        description="Neon",
        weight_name="neon.safetensors",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[loras]]\nname = 'a'\n", r"\[\[loras\]\] #1 needs a `source`"),
        ("[[loras]]\nname = 'a'\nsource = 'b'\nkind = 'if'\n", "kind must be one of sd, sdxl, flux, not 'if'"),
        ("[[loras]]\nname = 'a:b'\nsource = 'b'\n", "cannot hold any of"),
        ("[[loras]]\nname = 'a'\nsource = 'b'\nweight = 9\n", "between -5 and 5, not 9"),
        ("[[loras]]\nname = 'a'\nsource = 'b'\ntriggers = 'x'\n", "triggers must be a list of words"),
        ("[[loras]]\nname = 'a'\nsource = 'b'\nstrength = 1\n", r"unknown key\(s\): strength"),
        ("[[loras]]\nname = 'a'\nsource = 'b'\n[[loras]]\nname = 'a'\nsource = 'c'\n", "given more than once: a"),
        ("[generation]\nmax_loras = -1\n", "max_loras must be 0 or more, not -1"),
    ],
)
def test_lora_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
