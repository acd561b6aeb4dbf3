"""Every storage test gets a real SQLite file and images directory under tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import Store
from tests.storage.factories import FakeClock


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "imagine.sqlite3"


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    return tmp_path / "images"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(db_path: Path, images_dir: Path, clock: FakeClock) -> AsyncIterator[Store]:
    async with await Store.open(db_path, images_dir, clock=clock) as opened:
        yield opened
