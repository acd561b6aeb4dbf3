"""`imagine-bot generate` with LoRAs from the config, from `--lora FILE:W` and from prompt tags, in a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from sd_parsers import ParserManager

from bot.cli import main
from generation.tiny.lora import write_tiny_lora
from tests.test_cli import imagine_bot


def test_generate_with_a_configured_lora_tag_and_a_lora_file(
    tmp_path: Path, tiny_sd_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    named, loose = tmp_path / "named.safetensors", tmp_path / "loose.safetensors"
    made = imagine_bot("tiny-model", str(named), "--kind", "lora-sd", cwd=tmp_path)
    assert made.returncode == 0 and made.stdout.strip() == str(named), made.stderr
    write_tiny_lora(loose, "sd", seed=2)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[generation]\ndefault_model = "tiny"\n[[models]]\nname = "tiny"\nsource = "{tiny_sd_dir}"\n'
        f'[[loras]]\nname = "N"\nsource = "./named.safetensors"\n'
    )
    out = tmp_path / "O"
    common = ["--config", str(config), "--seed", "7", "--steps", "2", "--size", "64x64", "--out", str(out)]
    result = imagine_bot(
        "generate", "x <lora:N:0.8>", "--model", "tiny", "--lora", f"{loose}:0.5", *common, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    (written,) = [Path(line) for line in result.stdout.splitlines()]
    with Image.open(written) as image:
        parameters = image.info["parameters"]
        info = ParserManager().parse(image)
    assert info.full_prompt == "x <lora:N:0.8> <lora:loose:0.5>"  # the file's LoRA is named after it
    assert 'Lora hashes: "N: ' in parameters and ", loose: " in parameters

    # Refused before the model loads (in this process: the same entry point, without a second start-up).
    assert main(["generate", "x", "--lora", "NN:0.5", *common]) == 1
    assert "There is no LoRA called 'NN'. Did you mean: N? LoRAs for 'tiny': N." in capsys.readouterr().err
