"""Fixtures shared across the suite: tiny offline models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from generation.engine import Engine


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SD pipeline on disk, written once per test session."""
    from generation.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd", "sd")


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SDXL pipeline on disk."""
    from generation.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sdxl", "sdxl")


# The loopback fake Discord (tests/fake_discord): the `fake_discord` fixture.
from tests.fake_discord.fixtures import fake_discord  # noqa: E402, F401


@pytest.fixture(scope="module")
def engine(tiny_sd_dir: Path, tiny_sdxl_dir: Path) -> Engine:
    """An engine on CPU with a tiny SD and a tiny SDXL model."""
    from generation.engine import Engine
    from generation.specs import ModelSpec

    return Engine(
        {
            "tiny": ModelSpec(name="tiny", source=str(tiny_sd_dir), steps=4, width=64, height=64),
            "tiny-xl": ModelSpec(name="tiny-xl", source=str(tiny_sdxl_dir), kind="sdxl", steps=3, width=64, height=64),
        },
        device="cpu",
        preview_every=2,
    )
