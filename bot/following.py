"""The part every delivery shares: following the event bus from construction, in a task that never dies, and
getting final messages through Discord outages (bot.retry says what is worth another try)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import discord

from bot.retry import CHANNEL_GONE, SERVER_LEFT, Backoff, Verdict, verdict
from jobs.events import Event, EventBus
from storage.store import Store

log = logging.getLogger(__name__)

STOP_GRACE = 5.0  # seconds a stopping bot waits for final messages already on their way
TOKEN_USABLE_FOR = 14 * 60  # interaction tokens die after 15 minutes; keep a margin


class EventFollower:
    """Subscribed from construction (so no event is missed); `_handle` runs for each event once started.

    The counters are for metrics: attempts at a final message that failed, attempts made again after a failure,
    and final messages given up because their channel or server is gone.
    """

    task_name = "events"

    def __init__(
        self,
        client: discord.Client,
        store: Store,
        bus: EventBus,
        clock: Callable[[], float] = time.time,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.bus = bus
        self.clock = clock
        self.backoff = backoff or Backoff()  # tests pass a tiny schedule ([discord] delivery_retry_first)
        self.failures_total = 0
        self.retries_total = 0
        self.undeliverable_total = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._backing_off: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._subscription = bus.subscribe()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start following events."""
        self._loop_task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        """Stop following events; messages on their way get a moment, the rest stay undelivered (not lost)."""
        self._subscription.close()
        self._stopping = True
        for task in list(self._backing_off):  # nothing on its way there: it waits for the next start instead
            task.cancel()
        if self._tasks:  # a message sent but not yet recorded as delivered would be sent again at the next start
            await asyncio.wait(set(self._tasks), timeout=STOP_GRACE)
        tasks = [t for t in (self._loop_task, *self._tasks, *self._editors()) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _editors(self) -> Iterable[asyncio.Task[None] | None]:
        """Tasks editing progress messages, cancelled on stop."""
        return ()

    async def _run(self) -> None:
        async for event in self._subscription:
            try:
                await self._handle(event)
            except Exception:
                log.exception("%s: could not handle %r", self.task_name, event)

    async def _handle(self, event: Event) -> None:
        raise NotImplementedError

    async def _until_delivered(
        self, attempt: Callable[[], Awaitable[None]], *, what: str, guild_id: int | None
    ) -> str | None:
        """Run `attempt` until it goes through, backing off between tries while Discord fails (5xx, 429, 403,
        network). Returns why it can never be delivered (bot.retry's CHANNEL_GONE or SERVER_LEFT), else None:
        delivered, or given up until the next start (logged) because repeating cannot help or the bot stops."""
        failures = 0
        while True:
            try:
                await attempt()
                return None
            except Exception as exc:
                failures += 1
                self.failures_total += 1
                found = verdict(exc)
                if found is Verdict.RETRY and self._left_server(exc, guild_id):
                    return self._undeliverable(what, SERVER_LEFT, exc)
                if found is Verdict.GONE:
                    return self._undeliverable(what, CHANNEL_GONE, exc)
                if found is Verdict.GIVE_UP:
                    log.error(
                        "%s: could not deliver %s; it stays undelivered for the next start",
                        self.task_name,
                        what,
                        exc_info=exc,
                    )
                    return None
                if self._stopping:
                    return None
                pause = self.backoff.delay(failures)
                log.warning(
                    "%s: delivering %s failed (%s: %s); try %d in %.1f s",
                    self.task_name,
                    what,
                    type(exc).__name__,
                    exc,
                    failures + 1,
                    pause,
                )
            task = asyncio.current_task()
            assert task is not None
            self._backing_off.add(task)
            try:
                await asyncio.sleep(pause)
            finally:
                self._backing_off.discard(task)
            self.retries_total += 1

    def _left_server(self, error: Exception, guild_id: int | None) -> bool:
        """A 403 because the bot is no longer in the server (it would have to be invited again)."""
        if guild_id is None or not isinstance(error, discord.Forbidden) or not self.client.is_ready():
            return False
        return self.client.get_guild(guild_id) is None

    def _undeliverable(self, what: str, why: str, error: Exception) -> str:
        self.undeliverable_total += 1
        log.warning("%s: %s can never be delivered (%s): %s", self.task_name, what, why, error)
        return why

    def _token_usable(self, origin: dict[str, Any]) -> bool:
        """Whether the message came from an interaction whose token can still edit its response."""
        age = self.clock() - float(origin.get("created_at", 0))
        return origin.get("kind") == "interaction" and age < TOKEN_USABLE_FOR

    def _webhook(self, origin: dict[str, Any]) -> discord.Webhook:
        """The interaction's webhook (its original response is addressable as @original)."""
        return discord.Webhook.partial(int(origin["application_id"]), origin["token"], client=self.client)

    def _channel(self, origin: dict[str, Any]) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(int(origin["channel_id"]))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
