"""Waiting for the fake's state to satisfy a condition, without polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL_S = 0.02


class ChangeSignal:
    """Wakes every waiter whenever the fake records something new."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Tell waiters that state changed."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(
        self, probe: Callable[[], T | None], timeout: float, describe: Callable[[], str] | str = ""
    ) -> T:
        """Return the first non-None result of `probe()`, re-checked after every change (and every 20 ms)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = probe()
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                detail = describe() if callable(describe) else describe
                raise TimeoutError(f"fake Discord: nothing matched within {timeout}s. {detail}".strip())
            event = self._event
            # Also re-check every POLL_S: probes may look at the bot's state, which never notifies.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, POLL_S))
