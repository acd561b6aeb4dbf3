"""Engines on the tiny models, shared by the generation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from generation.engine import Engine
from generation.specs import ModelSpec


@pytest.fixture(scope="module")
def engine(tiny_sd_dir: Path, tiny_sdxl_dir: Path) -> Engine:
    """An engine on CPU with a tiny SD and a tiny SDXL model."""
    return Engine(
        {
            "tiny": ModelSpec(name="tiny", source=str(tiny_sd_dir), steps=4, width=64, height=64),
            "tiny-xl": ModelSpec(name="tiny-xl", source=str(tiny_sdxl_dir), kind="sdxl", steps=3, width=64, height=64),
        },
        device="cpu",
        preview_every=2,
    )
