"""Pytest fixtures: a started fake Discord with discord.py pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from .discord_client import point_discord_py_at
from .server import FakeDiscord


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A running FakeDiscord (default world); discord.py's Route.BASE and gateway point at it."""
    async with FakeDiscord() as fake:
        with point_discord_py_at(fake.api_base, fake.gateway_url):
            yield fake
