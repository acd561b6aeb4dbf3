"""Getting a final message through a Discord outage: which failures are worth another try, and how long to wait.

discord.py 2.7 retries a request itself, then raises: a 429 after its retry_after; on the bot's REST calls 500,
502, 504 and 524 for about 25 s and a 503 not at all; on interaction-webhook calls (editing a response) every 5xx
for about 25 s. What it raises lands here: server errors, rate limits, 403 (permissions can be given back) and
network errors are tried again with back-off; Unknown Channel or Unknown Guild mean the place is gone for good;
anything else (a 400, a bug) will not get better by repeating it.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import discord

UNDELIVERABLE = "undeliverable:"  # delivered_where of a result that can never be shown: "undeliverable:<why>"
CHANNEL_GONE = UNDELIVERABLE + "channel"
SERVER_LEFT = UNDELIVERABLE + "server"
GONE_CODES = {10003, 10004}  # Unknown Channel, Unknown Guild
# Tries at an edit that may have landed (5xx, a lost answer) before the result is posted anew instead. With
# discord.py's 25 s of its own retries per webhook try and our pauses, five cover a few minutes of outage.
EDIT_TRIES = 5
# Local file errors are OSErrors too; repeating cannot bring a file back.
LOCAL_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


class Verdict(enum.Enum):
    """What to do after a failed attempt."""

    RETRY = "retry"  # a passing problem: try again after a pause
    GONE = "gone"  # the channel or server is gone: record the result as undeliverable
    GIVE_UP = "give up"  # repeating will not help: leave it for the next start


def verdict(error: BaseException) -> Verdict:
    """Whether a failed delivery is worth another try (see the module docstring)."""
    if isinstance(error, discord.NotFound):
        return Verdict.GONE if error.code in GONE_CODES else Verdict.GIVE_UP
    if isinstance(error, discord.HTTPException):
        return Verdict.RETRY if error.status >= 500 or error.status in (403, 408, 429) else Verdict.GIVE_UP
    if isinstance(error, discord.RateLimited | aiohttp.ClientError | asyncio.TimeoutError):
        return Verdict.RETRY
    if isinstance(error, OSError) and not isinstance(error, LOCAL_ERRORS):
        return Verdict.RETRY  # connection refused or reset, no route, name resolution
    return Verdict.GIVE_UP


def may_have_landed(error: BaseException) -> bool:
    """Whether a failed request may have taken effect all the same: a server error, or its answer lost with the
    connection. A 4xx was refused and changed nothing."""
    if isinstance(error, discord.HTTPException):
        return error.status >= 500
    return verdict(error) is Verdict.RETRY


@dataclass
class EditTries:
    """What the tries at one final message learned about editing the message shown so far."""

    gone: bool = False  # it cannot be edited (deleted, token dead, refused): post the result anew
    failed: int = 0

    def failed_in_passing(self, error: Exception) -> bool:
        """Count a failed edit; True when the same edit should be tried again later rather than a new post sent
        now (it may have landed, and a post could then show the result twice)."""
        self.failed += 1
        if may_have_landed(error) and self.failed < EDIT_TRIES:
            return True
        self.gone = True
        return False


@dataclass(frozen=True)
class Backoff:
    """Pauses between attempts: `first` seconds, doubling up to `cap`, each scaled by a random 1 ± `jitter`
    (results that failed together in an outage do not all come back at the same instant)."""

    first: float = 2.0
    cap: float = 300.0
    factor: float = 2.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError(f"back-off needs 0 < first <= cap, not first={self.first} cap={self.cap}")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"back-off needs factor >= 1 and 0 <= jitter < 1, not {self.factor}, {self.jitter}")

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the `failures`-th failed attempt in a row (1 for the first)."""
        # Exponent capped so the power cannot overflow after days of retries.
        base = min(self.cap, self.first * self.factor ** min(failures - 1, 64))
        return min(self.cap, base * (1 + self.jitter * (2 * rand() - 1)))
