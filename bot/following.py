"""The part every delivery shares: following the event bus from construction, in a task that never dies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import discord

from jobs.events import Event, EventBus
from storage.store import Store

log = logging.getLogger(__name__)

STOP_GRACE = 5.0  # seconds a stopping bot waits for final messages already on their way
TOKEN_USABLE_FOR = 14 * 60  # interaction tokens die after 15 minutes; keep a margin


class EventFollower:
    """Subscribed from construction (so no event is missed); `_handle` runs for each event once started."""

    task_name = "events"

    def __init__(
        self, client: discord.Client, store: Store, bus: EventBus, clock: Callable[[], float] = time.time
    ) -> None:
        self.client = client
        self.store = store
        self.bus = bus
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscription = bus.subscribe()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start following events."""
        self._loop_task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        """Stop following events; messages on their way get a moment, the rest stay undelivered (not lost)."""
        self._subscription.close()
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
