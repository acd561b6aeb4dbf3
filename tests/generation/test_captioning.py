"""/describe's Captioner against the raw transformers BLIP called the same way, on the tiny offline BLIP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor

from generation.captioning import Captioner, clean
from generation.errors import ModelUnavailable
from generation.tiny.captioner import write_tiny_captioner


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_captioner(tmp_path_factory.mktemp("models") / "tiny-blip")


def picture(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def raw_suggestions(directory: Path, image: Image.Image) -> list[str]:
    """BLIP's conditional captioning as its model card shows it, one opening per suggestion, 3 beams."""
    model = BlipForConditionalGeneration.from_pretrained(directory).eval()
    processor = BlipProcessor.from_pretrained(directory)
    found = []
    for prefix in ("a picture of", "a photograph of", "a painting of", "an illustration of"):
        inputs = processor(images=image, text=prefix, return_tensors="pt")
        with torch.inference_mode():
            tokens = model.generate(**inputs, num_beams=3, max_new_tokens=30)
        found.append(processor.decode(tokens[0], skip_special_tokens=True))
    return found


def test_suggestions_equal_raw_transformers(blip_dir: Path) -> None:
    image = picture(1)
    suggestions = Captioner(str(blip_dir), device="cpu").suggestions(image)
    assert suggestions == raw_suggestions(blip_dir, image)


def test_four_different_suggestions_the_same_for_the_same_picture(blip_dir: Path) -> None:
    captioner = Captioner(str(blip_dir), device="cpu")
    first = captioner.suggestions(picture(1))
    assert len(first) == 4 and len(set(first)) == 4
    assert [s.split(" of ")[0] for s in first] == ["a picture", "a photograph", "a painting", "an illustration"]
    assert all(len(s.split()) > 3 for s in first)  # a caption follows each opening
    assert Captioner(str(blip_dir), device="cpu").suggestions(picture(1)) == first  # a fresh load, too
    assert captioner.suggestions(picture(2)) != first  # the picture is what they describe
    assert captioner.suggestions(picture(1), count=2) == first[:2]
    with pytest.raises(ValueError, match="count must be from 1 to 4, not 5"):
        captioner.suggestions(picture(1), count=5)


def test_pictures_with_transparency_are_captioned_over_white(blip_dir: Path) -> None:
    captioner = Captioner(str(blip_dir), device="cpu")
    clear = picture(3).convert("RGBA")
    clear.putalpha(0)  # colours nobody sees: dropping the alpha channel alone would caption them
    white = Image.new("RGB", clear.size, (255, 255, 255))
    assert captioner.suggestions(clear) == captioner.suggestions(white) != captioner.suggestions(picture(3))


def test_a_missing_model_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="captioning model could not be loaded"):
        Captioner(str(tmp_path / "missing"), device="cpu").suggestions(picture(1))


def test_clean_collapses_whitespace_and_drops_empty_and_repeated() -> None:
    assert clean([" a  cat ", "A cat", "", "a cat", "a\tdog\n"]) == ["a cat", "A cat", "a dog"]
