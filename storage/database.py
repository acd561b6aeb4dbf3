"""One aiosqlite connection with the pragmas we rely on and serialised transactions."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from storage.records import to_db_time

Clock = Callable[[], datetime]

BUSY_TIMEOUT_MS = 10_000


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


class Database:
    """A connection shared by coroutines: a lock keeps one coroutine's transaction from
    swallowing another's statements, since they all run on the same SQLite connection."""

    def __init__(self, connection: aiosqlite.Connection, clock: Clock) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()
        self._clock = clock

    @classmethod
    async def connect(cls, path: Path, clock: Clock) -> Database:
        """Open (creating if needed) the SQLite file in WAL mode with foreign keys on."""
        # isolation_level=None: we issue BEGIN ourselves, so Python never opens hidden transactions.
        connection = await aiosqlite.connect(path, isolation_level=None)
        try:
            connection.row_factory = sqlite3.Row
            await connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await connection.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit survives power loss, which "committed before the user is told" needs.
            await connection.execute("PRAGMA synchronous = FULL")
            await connection.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            await connection.close()
            raise
        return cls(connection, clock)

    def now(self) -> str:
        """The current time as stored in timestamp columns."""
        return to_db_time(self._clock())

    def utcnow(self) -> datetime:
        """The current time from the clock timestamps use."""
        return self._clock()

    def today(self) -> date:
        """The current UTC day, the unit of usage counters."""
        return self._clock().astimezone(UTC).date()

    @property
    def connection(self) -> aiosqlite.Connection:
        """The raw connection, for start-up work such as migrations."""
        return self._connection

    async def close(self) -> None:
        """Close the connection after any transaction in progress."""
        async with self._lock:
            await self._connection.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction: committed if the block ends normally, rolled back otherwise."""
        async with self._lock:
            try:
                # IMMEDIATE takes the write lock now, so another process cannot make us fail mid-way.
                # Inside the try: a caller cancelled while BEGIN waits must still roll it back.
                await self._connection.execute("BEGIN IMMEDIATE")
                yield self._connection
            except BaseException:
                await asyncio.shield(self._connection.rollback())
                raise
            # Shielded so a cancelled caller still leaves the commit to finish rather than half-done.
            await asyncio.shield(self._connection.commit())

    async def fetch_all(self, sql: str, parameters: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """All rows of one query, read outside any other coroutine's open transaction."""
        async with self._lock, self._connection.execute(sql, tuple(parameters)) as cursor:
            return list(await cursor.fetchall())

    async def fetch_one(self, sql: str, parameters: Iterable[Any] = ()) -> sqlite3.Row | None:
        """The first row of one query, or None."""
        async with self._lock, self._connection.execute(sql, tuple(parameters)) as cursor:
            return await cursor.fetchone()


async def fetch_all(db: aiosqlite.Connection, sql: str, parameters: Iterable[Any] = ()) -> list[sqlite3.Row]:
    """All rows of a query run inside a transaction already held."""
    async with db.execute(sql, tuple(parameters)) as cursor:
        return list(await cursor.fetchall())


async def fetch_one(db: aiosqlite.Connection, sql: str, parameters: Iterable[Any] = ()) -> sqlite3.Row | None:
    """The first row of a query run inside a transaction already held, or None."""
    async with db.execute(sql, tuple(parameters)) as cursor:
        return await cursor.fetchone()
