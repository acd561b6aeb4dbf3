"""Prompt suggestions for a picture (/describe) from a BLIP captioning model, through transformers.

Each suggestion is BLIP's conditional caption after its own opening words ("a painting of …"), the way BLIP's
model card prompts it: the four differ by construction, each names a look /imagine can aim for, and beam
search makes them the same every time for the same picture. Florence-2 is not served: it needs
trust_remote_code and cannot be built offline for tests here.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from PIL import Image

from generation.device import resolve_device, resolve_dtype
from generation.errors import ModelUnavailable
from generation.images import to_rgb

log = logging.getLogger(__name__)

PREFIXES = ("a picture of", "a photograph of", "a painting of", "an illustration of")
# Beam search: deterministic, and better captions than greedy decoding (BLIP's own evaluation used 3 beams).
GENERATE: dict[str, Any] = {"num_beams": 3, "max_new_tokens": 30}


class Captioner:
    """A BLIP captioning model (hub id or local directory), loaded on first use; call it from one thread only."""

    def __init__(self, source: str, device: str = "auto", dtype: str = "auto") -> None:
        self.source = source
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self._parts: tuple[Any, Any] | None = None  # (model, processor)

    def _load(self) -> tuple[Any, Any]:
        if self._parts is None:
            from transformers import BlipForConditionalGeneration, BlipProcessor

            try:
                processor = BlipProcessor.from_pretrained(self.source)
                model = BlipForConditionalGeneration.from_pretrained(self.source, dtype=self.dtype)
            except (OSError, ValueError) as exc:
                log.error("captioning model %s ([describe] model) could not be loaded: %s", self.source, exc)
                raise ModelUnavailable(
                    "The captioning model could not be loaded on the bot's machine; its operator has been told."
                ) from exc
            self._parts = (model.to(self.device).eval(), processor)
        return self._parts

    def suggestions(self, image: Image.Image, count: int = len(PREFIXES)) -> list[str]:
        """Up to `count` (1-4) different prompts describing `image`, the same ones every time for the same picture."""
        if not 1 <= count <= len(PREFIXES):
            raise ValueError(f"count must be from 1 to {len(PREFIXES)}, not {count}")
        model, processor = self._load()
        image = to_rgb(image)
        found: list[str] = []
        with torch.inference_mode():
            for prefix in PREFIXES[:count]:
                inputs = processor(images=image, text=prefix, return_tensors="pt").to(self.device, self.dtype)
                tokens = model.generate(**inputs, **GENERATE)
                found.append(processor.decode(tokens[0], skip_special_tokens=True))
        return clean(found)


def clean(captions: list[str]) -> list[str]:
    """Whitespace collapsed, empty ones and repeats dropped, order and case kept."""
    seen: dict[str, None] = {}
    for caption in captions:
        text = " ".join(caption.split())
        if text:
            seen.setdefault(text)
    return list(seen)
