"""Pointing the real discord.py client at the fake, and running a client for the length of a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import discord
import yarl

from .server import FakeDiscord

ClientT = TypeVar("ClientT", bound=discord.Client)


@contextlib.contextmanager
def point_discord_py_at(api_base: str, gateway_url: str) -> Iterator[None]:
    """Set Route.BASE and DiscordWebSocket.DEFAULT_GATEWAY, restoring the old values on exit."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@contextlib.asynccontextmanager
async def running_client(client: ClientT, fake: FakeDiscord, *, ready_timeout: float = 10.0) -> AsyncIterator[ClientT]:
    """Log in, connect and wait for on_ready; close the client (and its HTTP session) on exit."""
    await client.login(fake.token)
    connection = asyncio.create_task(client.connect(reconnect=True), name="fake-discord-client")
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait({ready, connection}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED)
        if connection in done:
            connection.result()
            raise RuntimeError("client.connect() returned before the client became ready")
        if ready not in done:
            raise TimeoutError(f"client not ready after {ready_timeout}s; gateway log: {fake.gateway.log[-10:]}")
        yield client
    finally:
        ready.cancel()
        await client.close()
        try:
            await asyncio.wait_for(connection, 5)
        except (asyncio.CancelledError, TimeoutError):
            connection.cancel()
