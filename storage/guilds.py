"""Per-guild data for moderation: key/value settings with an audit trail, and daily usage."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import aiosqlite

from storage.database import Database, fetch_one
from storage.records import AuditEntry, Usage, audit_from_row

DM_GUILD = 0
"""Usage rows use guild 0 for DMs: Discord never issues snowflake 0, and NULL cannot be a key."""


async def add_usage(
    db: aiosqlite.Connection, user_id: int, guild_id: int | None, day: date, *, jobs: int, images: int
) -> None:
    """Add to a user's counters for one day, inside the caller's transaction."""
    await db.execute(
        """
        INSERT INTO usage (user_id, guild_id, day, jobs, images) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (user_id, guild_id, day)
        DO UPDATE SET jobs = jobs + excluded.jobs, images = images + excluded.images
        """,
        (user_id, DM_GUILD if guild_id is None else guild_id, day.isoformat(), jobs, images),
    )


class GuildRecords:
    """Guild settings, their audit log and usage counters."""

    _db: Database

    async def usage(self, user_id: int, guild_id: int | None, day: date | None = None) -> Usage:
        """A user's jobs and images on one UTC day (default today) in one guild (None: DMs)."""
        day = day or self._db.today()
        row = await self._db.fetch_one(
            "SELECT jobs, images FROM usage WHERE user_id = ? AND guild_id = ? AND day = ?",
            (user_id, DM_GUILD if guild_id is None else guild_id, day.isoformat()),
        )
        jobs, images = (row["jobs"], row["images"]) if row else (0, 0)
        return Usage(user_id=user_id, guild_id=guild_id, day=day, jobs=jobs, images=images)

    async def get_guild_settings(self, guild_id: int) -> dict[str, Any]:
        """Every setting a guild changed from the defaults, key → JSON value."""
        rows = await self._db.fetch_all("SELECT key, value FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return {row["key"]: json.loads(row["value"]) for row in rows}

    async def set_guild_setting(self, guild_id: int, key: str, value: Any, *, by_user: int) -> None:
        """Set one JSON-able setting and record old → new in the audit log, atomically."""
        new = json.dumps(value, sort_keys=True)
        async with self._db.write() as db:
            old = await self._current(db, guild_id, key)
            if old == new:
                return
            await db.execute(
                """
                INSERT INTO guild_settings (guild_id, key, value, updated_at, updated_by)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (guild_id, key)
                DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,
                              updated_by = excluded.updated_by
                """,
                (guild_id, key, new, self._db.now(), by_user),
            )
            await self._audit(db, guild_id, by_user, key, old, new)

    async def reset_guild_setting(self, guild_id: int, key: str, *, by_user: int) -> bool:
        """Drop a setting back to the default, audited; True if it was set."""
        async with self._db.write() as db:
            old = await self._current(db, guild_id, key)
            if old is None:
                return False
            await db.execute("DELETE FROM guild_settings WHERE guild_id = ? AND key = ?", (guild_id, key))
            await self._audit(db, guild_id, by_user, key, old, None)
            return True

    async def audit_log(self, guild_id: int, limit: int = 25) -> list[AuditEntry]:
        """A guild's setting changes, newest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM settings_audit WHERE guild_id = ? ORDER BY id DESC LIMIT ?", (guild_id, limit)
        )
        return [audit_from_row(row) for row in rows]

    @staticmethod
    async def _current(db: aiosqlite.Connection, guild_id: int, key: str) -> str | None:
        row = await fetch_one(db, "SELECT value FROM guild_settings WHERE guild_id = ? AND key = ?", (guild_id, key))
        return None if row is None else row["value"]

    async def _audit(
        self,
        db: aiosqlite.Connection,
        guild_id: int,
        user_id: int,
        key: str,
        old: str | None,
        new: str | None,
    ) -> None:
        await db.execute(
            "INSERT INTO settings_audit (guild_id, user_id, key, old, new, at) VALUES (?, ?, ?, ?, ?, ?)",
            (guild_id, user_id, key, old, new, self._db.now()),
        )
