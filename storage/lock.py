"""One process per database: an OS file lock beside the SQLite file, released by the OS when its holder dies.

SQLite itself lets many processes share a file, but the queue does not: a second bot would take the first
one's running jobs for a crash's leftovers and generate them again. The lock is `flock` on `<database>.lock`,
which holds who took it (pid, host, start time, command) for the message the next process shows. The OS
drops it when the holder exits or is killed, so a crash never leaves the database locked. It is never
deleted: removing a lock file can let two processes each lock a different file of the same name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

LOCK_SUFFIX = ".lock"
# A holder writes who it is just after it takes the lock; a refused process waits this long to read it.
HOLDER_READ_TIMEOUT = 0.5


def lock_path(database: Path | str) -> Path:
    """The lock file of a database: `<database>.lock`, beside it."""
    database = Path(database)
    return database.with_name(database.name + LOCK_SUFFIX)


@dataclass(frozen=True)
class Holder:
    """The process holding a database's lock."""

    pid: int
    host: str
    since: datetime
    command: str = ""

    def describe(self) -> str:
        """`pid 4242 on gpu-box, since 2025-06-01 12:00:03 UTC` (and which command, when known)."""
        when = self.since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        command = f"`imagine-bot {self.command}`, " if self.command else ""
        return f"{command}pid {self.pid} on {self.host}, since {when}"


class DatabaseInUse(Exception):
    """Another process holds the database's lock."""

    def __init__(self, database: Path, holder: Holder | None) -> None:
        self.database = database
        self.holder = holder
        super().__init__(self.message())

    def message(self, setting: str = "") -> str:
        """One line for the operator; `setting` names where the path came from, e.g. `[storage] path`."""
        who = f" ({self.holder.describe()})" if self.holder else ""
        where = f" ({setting})" if setting else ""
        return (
            f"another imagine-bot{who} is running on the database {self.database}{where}; stop it first, "
            "or give this one a database of its own"
        )


class DatabaseLock:
    """The lock on one database, held until `release()` (or the end of a `with` block, or the process)."""

    def __init__(self, database: Path, fd: int, holder: Holder) -> None:
        self.database = database
        self.holder = holder
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, database: Path | str, command: str = "") -> DatabaseLock:
        """Take the database's lock now, or raise DatabaseInUse naming the process that has it."""
        database = Path(database)
        path = lock_path(database)
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: a program this process starts must not inherit (and so keep holding) the lock.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatabaseInUse(database, read_holder(path)) from None
        except BaseException:
            os.close(fd)
            raise
        holder = Holder(pid=os.getpid(), host=socket.gethostname(), since=datetime.now(UTC), command=command)
        try:
            _write_holder(fd, holder)
        except BaseException:
            os.close(fd)
            raise
        return cls(database, fd, holder)

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        """Let the next process take the database (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # still locked here: nobody reads a half-cleared file as a holder
        os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> DatabaseLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    async def __aenter__(self) -> DatabaseLock:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def check_free(database: Path | str) -> None:
    """Raise DatabaseInUse if another process holds the database's lock now (a quick look; takes nothing)."""
    database = Path(database)
    path = lock_path(database)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # never locked
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DatabaseInUse(database, read_holder(path)) from None
    finally:
        os.close(fd)  # also drops the lock, if it was taken here


def read_holder(path: Path, timeout: float = HOLDER_READ_TIMEOUT) -> Holder | None:
    """Who holds a lock file, as it wrote; None if it has not written yet (or wrote something unreadable)."""
    deadline = time.monotonic() + timeout
    while True:
        holder = _parse_holder(path)
        if holder is not None or time.monotonic() >= deadline:
            return holder
        time.sleep(0.05)  # the holder is between taking the lock and writing its name


def _parse_holder(path: Path) -> Holder | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Holder(
            pid=int(data["pid"]),
            host=str(data["host"]),
            since=datetime.fromisoformat(data["since"]),
            command=str(data.get("command", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_holder(fd: int, holder: Holder) -> None:
    text = json.dumps(
        {"pid": holder.pid, "host": holder.host, "since": holder.since.isoformat(), "command": holder.command}
    )
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode("utf-8"), 0)
