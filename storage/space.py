"""A full disk: telling its errors apart from other failures, and finding out when there is room again."""

from __future__ import annotations

import errno
import functools
import logging
import shutil
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import ParamSpec, TypeVar

from generation.errors import InvalidRequest

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

# ENOSPC: the filesystem is full; EDQUOT: this user's quota is.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Room enough for a few batches of large PNGs and the SQLite write-ahead log growing meanwhile.
MIN_FREE_BYTES = 64 * 1024 * 1024
NO_ROOM = (
    "The bot's storage is full, so it cannot take new jobs right now (its operator has been told). Try again later."
)


class NoRoomForJobs(InvalidRequest):
    """The disk is full: a new job cannot be stored, so it is refused before anyone is told it is queued."""


def is_storage_full(error: BaseException) -> bool:
    """Whether an error (or what caused it) means the disk or the quota is full, for image files or SQLite."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.OperationalError) and (
            getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or "database or disk is full" in str(current)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def free_bytes_below(directories: Iterable[Path], margin: int) -> Path | None:
    """The first directory whose filesystem has less than `margin` bytes free, or None when all have room."""
    for directory in directories:
        if shutil.disk_usage(directory).free < margin:
            return directory
    return None


def refuse_when_full(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn a full disk while storing something new into NoRoomForJobs, which the bot answers as a refusal."""

    @functools.wraps(method)
    async def refusing(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            if not is_storage_full(exc):
                raise
            log.warning("storage full: a new job was refused (%s)", exc)
            raise NoRoomForJobs(NO_ROOM) from exc

    return refusing
