"""The Discord client: intents, extensions, restart-proof buttons, command sync, delivery."""

from __future__ import annotations

import asyncio
import logging
import time

import discord
from discord import app_commands
from discord.ext import commands

from bot.answers import answer_error, answer_unexpected
from bot.delivery import Delivery
from bot.imagine.actions import run_action
from bot.imagine.views import JobButton, progress_view, result_view, upscaled_view
from bot.render import NO_MENTIONS
from bot.retry import Backoff
from bot.services import Services
from bot.train.actions import run_training_action
from bot.train.delivery import TrainingDelivery
from bot.train.views import TrainingButton
from generation.catalog import family_for
from generation.request import Mode
from storage.records import JobRecord

log = logging.getLogger(__name__)

IDENTIFY_INTERVAL = 5.0  # seconds Discord wants between session starts in one max_concurrency bucket
EXTENSIONS = (
    "bot.imagine.cog",
    "bot.history",
    "bot.remix",
    "bot.moderation.admin",
    "bot.train.cog",
    "bot.train.library",
    "bot.describe",
    "bot.upscale",
)


def intents() -> discord.Intents:
    """The minimum: servers, their messages, and message text for remix-by-reply (privileged)."""
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = True
    return wanted


class ImagineBot(commands.Bot):
    """imagine-bot's client; everything it uses arrives in `services`, and it owns the Delivery that
    turns job events into its messages (built here, since delivery talks through this client)."""

    def __init__(self, services: Services, **options) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents(),
            allowed_mentions=NO_MENTIONS,
            chunk_guilds_at_startup=False,
            help_command=None,
            **options,
        )
        self.services = services
        settings = services.config.discord
        backoff = Backoff(first=settings.delivery_retry_first, cap=settings.delivery_retry_max)
        self.delivery = Delivery(
            self,
            services.store,
            services.queue.bus,
            result_view=self._result_view,
            progress_view=progress_view,
            backoff=backoff,
        )
        self.training_delivery = TrainingDelivery(self, services.store, services.queue.bus, backoff=backoff)
        self.tree.on_error = self.on_app_command_error

    async def setup_hook(self) -> None:
        """Load cogs, make old buttons work again, sync commands, start delivering."""
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        self.add_dynamic_items(JobButton, TrainingButton)
        guild_ids = self.services.config.discord.guild_ids
        if guild_ids:
            for guild_id in guild_ids:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()
        self.delivery.start()
        self.training_delivery.start()
        await self.delivery.deliver_undelivered()
        await self.training_delivery.deliver_undelivered()

    async def close(self) -> None:
        """Stop delivering before the connection goes."""
        await self.delivery.stop()
        await self.training_delivery.stop()
        await super().close()

    def _result_view(self, job: JobRecord) -> discord.ui.View:
        """A result's buttons; Zoom Out and Pan only where the job's model can inpaint, Upscale (Subtle) only with
        an upscaler; an upscaled picture's are Info and Delete."""
        catalog = self.services.catalog
        if job.model in catalog.upscalers:
            return upscaled_view(job)
        spec = catalog.models.get(job.model)
        outpaint = spec is not None and Mode.INPAINT in family_for(spec.kind).modes
        return result_view(job, outpaint=outpaint, subtle=bool(catalog.upscalers))

    async def run_button(self, interaction: discord.Interaction, action: str, job_id: int, index: int | None) -> None:
        """What a result or progress button does when clicked."""
        await run_action(interaction, action, job_id, index)

    async def run_training_button(self, interaction: discord.Interaction, action: str, target_id: int) -> None:
        """What a button on a training message does when clicked."""
        await run_training_action(interaction, action, target_id)

    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Answer failed checks (e.g. missing Manage Server) with their reason; log the unexpected."""
        if isinstance(error, app_commands.CheckFailure):
            await answer_error(interaction, str(error))
            return
        name = interaction.command.name if interaction.command else "?"
        await answer_unexpected(interaction, error, f"command /{name}")


class ShardedImagineBot(ImagineBot, commands.AutoShardedBot):
    """ImagineBot over several gateway connections (`[discord] shards`), as Discord requires past 2,500 servers."""

    def __init__(self, services: Services, **options) -> None:
        shards = services.config.discord.shards
        super().__init__(services, shard_count=None if shards == "auto" else shards, **options)
        self._max_concurrency = 1
        self._identify_slots: dict[int, float] = {}  # bucket -> when its latest session start was (or is) due

    async def launch_shards(self) -> None:
        """Ask Discord (GET /gateway/bot) how many shards ("auto") and how many may start at once, then start them."""
        try:
            count, _url, limits = await self.http.get_bot_gateway()
        except discord.GatewayNotFound:
            if self.shard_count is None:
                raise
            log.warning(
                "GET /gateway/bot failed; starting %d shards one every %.0f s", self.shard_count, IDENTIFY_INTERVAL
            )
        else:
            # Set here, discord.py keeps DEFAULT_GATEWAY ([discord] gateway_url when set) instead of Discord's URL.
            self.shard_count = self.shard_count or count
            self._max_concurrency = max(1, int(limits.get("max_concurrency") or 1))
        await super().launch_shards()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Start sessions as fast as Discord allows: one per 5 s in each of `max_concurrency` buckets
        (shard_id % max_concurrency); discord.py alone waits 5 s before every shard but the first."""
        bucket = (shard_id or 0) % self._max_concurrency
        now = time.monotonic()
        due = max(now, self._identify_slots.get(bucket, now - IDENTIFY_INTERVAL) + IDENTIFY_INTERVAL)
        self._identify_slots[bucket] = due  # taken before sleeping: a second shard of the bucket queues behind
        if due > now:
            await asyncio.sleep(due - now)


def build_bot(services: Services) -> ImagineBot:
    """The client `[discord] shards` asks for: one gateway connection (the default) or AutoShardedBot's shards."""
    if services.config.discord.shards is None:
        return ImagineBot(services)
    return ShardedImagineBot(services)
