"""Kandinsky 2.2 and Karlo in the config: the example's entries load as written, relative parts resolve."""

from __future__ import annotations

import re
from pathlib import Path

from bot.config import load_config
from generation.families.kandinsky import part_source
from generation.specs import KIND_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]


def _example_block(name: str) -> str:
    """The commented `[[models]]` entry named `name` in config.example.toml, uncommented."""
    text = (ROOT / "config.example.toml").read_text()
    match = re.search(rf'^# \[\[models\]\]\n# name = "{name}"\n(?:# \w+ = .*\n)+', text, re.MULTILINE)
    assert match, f"config.example.toml has no commented [[models]] entry for {name}"
    return "\n".join(line.removeprefix("# ") for line in match[0].splitlines()) + "\n"


def test_the_examples_load_with_their_hub_sources(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(_example_block("kandinsky") + _example_block("karlo") + '[generation]\ndefault_model = "karlo"\n')
    models = load_config(path).model_map
    kandinsky, karlo = models["kandinsky"], models["karlo"]
    assert (kandinsky.kind, kandinsky.source) == ("kandinsky", "kandinsky-community/kandinsky-2-2-decoder")
    assert kandinsky.prior == "kandinsky-community/kandinsky-2-2-prior"
    assert kandinsky.inpaint_decoder == "kandinsky-community/kandinsky-2-2-decoder-inpaint"
    assert (karlo.kind, karlo.source, karlo.width, karlo.height) == ("karlo", "kakaobrain/karlo-v1-alpha", 256, 256)
    assert (kandinsky.steps, kandinsky.guidance, kandinsky.width) == (50, 4.0, 768)


def test_kind_defaults_and_relative_parts(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[models]]\nname = "k"\nsource = "./k"\nkind = "kandinsky"\nprior = "./priors/k22"\n'
        '[[models]]\nname = "u"\nsource = "./u"\nkind = "karlo"\n[generation]\ndefault_model = "k"\n'
    )
    models = load_config(path).model_map
    k, u = models["k"], models["u"]
    assert KIND_DEFAULTS["kandinsky"].steps == k.steps == 50
    assert (k.guidance, k.width, k.height) == (4.0, 768, 768)
    assert (u.steps, u.guidance, u.width, u.height) == (25, 8.0, 256, 256)
    assert part_source(k, "prior") == str(tmp_path / "priors" / "k22")
    assert part_source(k, "inpaint_decoder") == str(tmp_path / "k" / "inpaint_decoder")
