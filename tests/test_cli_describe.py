"""`imagine-bot tiny-model DIR --kind captioner` writes the tiny BLIP that `[describe] model` loads offline."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor

from bot.config import load_config
from generation.captioning import Captioner
from generation.tiny.captioner import write_tiny_captioner
from tests.test_cli import imagine_bot


def test_tiny_captioner_from_the_command_line_loads_offline(tmp_path: Path) -> None:
    made = imagine_bot("tiny-model", str(tmp_path / "blip"), "--kind", "captioner", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == str(tmp_path / "blip")
    assert isinstance(BlipForConditionalGeneration.from_pretrained(tmp_path / "blip"), BlipForConditionalGeneration)
    assert BlipProcessor.from_pretrained(tmp_path / "blip").tokenizer.bos_token == "[DEC]"
    (tmp_path / "c.toml").write_text('[describe]\nmodel = "./blip"\n')
    config = load_config(tmp_path / "c.toml")
    assert config.describe.model == str(tmp_path / "blip")
    image = Image.new("RGB", (64, 64), (200, 40, 40))
    in_process = write_tiny_captioner(tmp_path / "in-process")
    assert Captioner(config.describe.model, device="cpu").suggestions(image) == Captioner(
        str(in_process), device="cpu"
    ).suggestions(image)
