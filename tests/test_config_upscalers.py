"""`[[upscalers]]` in the config: every key documented, relative sources resolved, mistakes named."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from generation.specs import UpscalerSpec
from jobs.limits import LimitExceeded, Limits, check_upscale

ROOT = Path(__file__).resolve().parents[1]


def test_every_upscaler_key_is_documented() -> None:
    text = (ROOT / "config.example.toml").read_text()
    documented = set(re.findall(r"^#?\s*(\w+)\s*=", text, re.MULTILINE))
    assert {f.name for f in fields(UpscalerSpec)} | {"default_upscaler", "max_upscaled_pixels"} <= documented
    example = load_config(ROOT / "config.example.toml")
    assert example.limits.max_upscaled_pixels == 2048 * 2048 and example.default_upscaler is None


def test_upscalers_load_with_defaults_and_relative_sources(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[generation]\ndefault_upscaler = "x4"\n'
        '[[upscalers]]\nname = " esrgan "\nsource = "./nets/esrgan.pth"\n'
        '[[upscalers]]\nname = "x4"\nsource = "stabilityai/stable-diffusion-x4-upscaler"\nkind = "sd-x4"\n'
        'scale = 2\ntile = 96\noverlap = 16\nsteps = 30\nguidance = 7\nnoise_level = 40\ndescription = "SD"\n'
    )
    config = load_config(path)
    esrgan = UpscalerSpec(name="esrgan", source=str(tmp_path / "nets" / "esrgan.pth"))
    assert config.upscaler_map["esrgan"] == esrgan and esrgan.tile_size == 512
    x4 = config.upscaler_map["x4"]
    assert x4 == UpscalerSpec(
        name="x4",
        source="stabilityai/stable-diffusion-x4-upscaler",
        kind="sd-x4",
        scale=2,
        tile=96,
        overlap=16,
        steps=30,
        guidance=7.0,
        noise_level=40,
        description="SD",
    )
    assert config.default_upscaler == x4
    assert UpscalerSpec(name="x", source="y", kind="sd-x4").tile_size == 128
    path.write_text('[[upscalers]]\nname = "a"\nsource = "a.pth"\n[[upscalers]]\nname = "b"\nsource = "b.pth"\n')
    assert load_config(path).default_upscaler.name == "a"  # none named: the first


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('name = "a"\nsource = "a.pth"\nsize = 2\n', r"\[\[upscalers\]\] #1 has unknown key\(s\): size"),
        ('name = "a"\n', r"\[\[upscalers\]\] #1 needs a `source`"),
        ('name = "a"\nsource = "a.pth"\nkind = "esrgan"\n', "kind must be one of spandrel, sd-x4, not 'esrgan'"),
        ('name = "a"\nsource = "a.pth"\ntile = 8\n', r"\(a\): tile must be a whole number from 32 to 4096, not 8"),
        ('name = "a"\nsource = "a.pth"\ntile = 64\noverlap = 40\n', "overlap must be a whole number from 0 to 32"),
        ('name = "a"\nsource = "a.pth"\nscale = 0\n', "scale must be a whole number from 1 to 16, not 0"),
        ('name = "a"\nsource = "a.pth"\nscale = 1.5\n', "scale must be a whole number from 1 to 16, not 1.5"),
        ('name = "a"\nsource = "x"\nkind = "sd-x4"\nnoise_level = 400\n', "noise_level must be .* 0 to 350"),
    ],
)
def test_upscaler_mistakes_are_named(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[[upscalers]]\n{toml}")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_upscaler_names_are_unique_and_the_default_must_be_one(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[upscalers]]\nname = "a"\nsource = "a.pth"\n[[upscalers]]\nname = "a"\nsource = "b.pth"\n')
    with pytest.raises(ConfigError, match="names must be unique; given more than once: a"):
        load_config(path)
    path.write_text('[generation]\ndefault_upscaler = "b"\n[[upscalers]]\nname = "a"\nsource = "a.pth"\n')
    with pytest.raises(ConfigError, match=r"default_upscaler is 'b', but \[\[upscalers\]\] has: a"):
        load_config(path)
    path.write_text('[[models]]\nname = "a"\nsource = "m"\n[[upscalers]]\nname = "a"\nsource = "a.pth"\n')
    with pytest.raises(ConfigError, match=r"\[\[upscalers\]\] and \[\[models\]\] share the name\(s\) a; rename one"):
        load_config(path)


def test_the_upscaled_size_limit_names_both_sizes() -> None:
    check_upscale(512, 512, 4, Limits())  # 2048x2048: exactly the default limit
    with pytest.raises(LimitExceeded) as refused:
        check_upscale(513, 512, 4, Limits())
    assert refused.value.user_message == (
        "Upscaling 513x512 4x would make 2052x2048 (4,202,496 pixels), over the limit of 4,194,304 for upscaled "
        "pictures (e.g. 2048x2048): pick a smaller scale or a smaller picture."
    )
    check_upscale(4096, 4096, 4, Limits.unlimited())
