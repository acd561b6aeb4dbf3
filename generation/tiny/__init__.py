"""Tiny random-weight pipelines of every kind, built offline, for tests and demos.

They run the same diffusers code paths as real checkpoints; only the sizes are small. Tokenizers are built
in memory, so nothing is downloaded. Each family's builder lives in its own module here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from generation.tiny.dalle_mini import write_tiny_dalle_mini
from generation.tiny.deepfloyd_if import write_tiny_if
from generation.tiny.flux import build_tiny_flux
from generation.tiny.kandinsky import write_tiny_kandinsky
from generation.tiny.karlo import build_tiny_karlo
from generation.tiny.sd3 import build_tiny_sd3
from generation.tiny.stable_diffusion import (
    TEXT_HIDDEN,
    build_tiny_sd,
    build_tiny_sdxl,
    text_config,
    tiny_preview_vae,
    tiny_tokenizer,
    tiny_vae,
)
from generation.tiny.translation import write_tiny_marian

# kind → a function writing a model that the family of that kind loads from the directory, offline.
BUILDERS: dict[str, Callable[[Path], Any]] = {
    "sd": lambda directory: build_tiny_sd().save_pretrained(directory),
    "sdxl": lambda directory: build_tiny_sdxl().save_pretrained(directory),
    "if": write_tiny_if,
    "flux": lambda directory: build_tiny_flux().save_pretrained(directory),
    "sd3": lambda directory: build_tiny_sd3().save_pretrained(directory),
    "translation": write_tiny_marian,  # not a model kind: a MarianMT for `[translation] model`
    "dalle-mini": write_tiny_dalle_mini,
    "dalle-mega": lambda directory: write_tiny_dalle_mini(directory, "dalle-mega"),
    "kandinsky": write_tiny_kandinsky,
    "karlo": lambda directory: build_tiny_karlo().save_pretrained(directory),
}


def write_tiny_model(directory: Path, kind: str = "sd") -> Path:
    """Write a tiny model of `kind` into `directory`, loadable offline."""
    if kind not in BUILDERS:
        raise ValueError(f"no tiny model for kind {kind!r}; choose one of {', '.join(BUILDERS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    BUILDERS[kind](directory)
    return directory


__all__ = [
    "BUILDERS",
    "TEXT_HIDDEN",
    "build_tiny_flux",
    "build_tiny_sd",
    "build_tiny_sd3",
    "build_tiny_sdxl",
    "text_config",
    "tiny_preview_vae",
    "tiny_tokenizer",
    "tiny_vae",
    "write_tiny_model",
]
