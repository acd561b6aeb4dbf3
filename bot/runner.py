"""The composition root of the bot: config → store → engine → queue → worker → Discord client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

import discord
import yarl

from bot.app import ImagineBot
from bot.config import Config, DiscordConfig
from bot.services import Services
from generation.engine import Engine
from jobs.events import EventBus
from jobs.queue import JobQueue
from jobs.worker import Worker
from storage.store import Store

log = logging.getLogger(__name__)


def point_discord_at(settings: DiscordConfig) -> None:
    """Send REST and gateway traffic to a proxy or a local server when configured."""
    if settings.api_base:
        discord.http.Route.BASE = settings.api_base.rstrip("/")
    if settings.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


@contextlib.asynccontextmanager
async def bot_parts(config: Config, engine: Engine | None = None) -> AsyncIterator[tuple[ImagineBot, Worker]]:
    """Store, queue (restored), running GPU worker and an unstarted client; torn down in order."""
    generation = config.generation
    engine = engine or Engine(
        config.model_map, device=generation.device, dtype=generation.dtype, preview_every=generation.preview_every
    )
    async with await Store.open(config.storage.path, config.storage.images_dir) as store:
        queue = JobQueue(store, EventBus(), config.limits)
        requeued, failed = await queue.restore(generation.max_attempts)
        log.info(
            "queue restored: %d waiting (%d re-queued after a crash, %d given up)",
            len(queue),
            len(requeued),
            len(failed),
        )
        worker = Worker(engine, queue, max_batch=generation.max_batch)
        bot = ImagineBot(Services(config, store, queue, has_safety_checker=engine.has_safety_checker))
        worker.start()
        try:
            yield bot, worker
        finally:
            await bot.close()
            await worker.stop()


async def run_bot(config: Config, token: str) -> None:
    """Run until the connection closes or the process is told to stop; the GPU loop stops gracefully."""
    point_discord_at(config.discord)
    async with bot_parts(config) as (bot, worker):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
        worker.warm(config.generation.default_model)
        await bot.start(token)
