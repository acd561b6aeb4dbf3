"""Read-only views of past jobs: per user, per guild, recent, and full-text search."""

from __future__ import annotations

from typing import Any

from storage.database import Database
from storage.records import JobRecord, JobStatus, job_from_row
from storage.search import fts_query

DEFAULT_PAGE = 25


def _scope(user_id: int | None, guild_id: int | None, dms_only: bool = False) -> tuple[str, list[Any]]:
    # Only the filters asked for, so SQLite can use the matching index.
    clauses, parameters = [], []
    if user_id is not None:
        clauses.append("jobs.user_id = ?")
        parameters.append(user_id)
    if guild_id is not None:
        clauses.append("jobs.guild_id = ?")
        parameters.append(guild_id)
    elif dms_only:
        clauses.append("jobs.guild_id IS NULL")
    return "".join(f" AND {clause}" for clause in clauses), parameters


class JobHistory:
    """History queries; every list is newest first and paged with limit/offset."""

    _db: Database

    async def jobs_by_user(
        self,
        user_id: int,
        guild_id: int | None = None,
        *,
        dms_only: bool = False,
        limit: int = DEFAULT_PAGE,
        offset: int = 0,
    ) -> list[JobRecord]:
        """One user's jobs, in one guild, in direct messages (`dms_only`) or (guild_id None) everywhere."""
        return await self._page(*_scope(user_id, guild_id, dms_only), limit, offset)

    async def active_jobs(self, user_id: int, *, limit: int = DEFAULT_PAGE) -> list[JobRecord]:
        """One user's queued and running jobs, everywhere."""
        rows = await self._db.fetch_all(
            "SELECT * FROM jobs WHERE user_id = ? AND status IN (?, ?) ORDER BY id DESC LIMIT ?",
            (user_id, JobStatus.QUEUED.value, JobStatus.RUNNING.value, limit),
        )
        return [job_from_row(row) for row in rows]

    async def jobs_by_guild(self, guild_id: int, *, limit: int = DEFAULT_PAGE, offset: int = 0) -> list[JobRecord]:
        """Every job made in one guild."""
        return await self._page(*_scope(None, guild_id), limit, offset)

    async def recent_jobs(self, limit: int = DEFAULT_PAGE, offset: int = 0) -> list[JobRecord]:
        """The latest jobs anywhere."""
        return await self._page("", [], limit, offset)

    async def search_jobs(
        self,
        text: str,
        *,
        user_id: int | None = None,
        guild_id: int | None = None,
        dms_only: bool = False,
        include_negative: bool = False,
        limit: int = DEFAULT_PAGE,
        offset: int = 0,
    ) -> list[JobRecord]:
        """Jobs whose prompt contains every word of `text`; any user text is safe to pass."""
        query = fts_query(text, include_negative=include_negative)
        if query is None:
            return []
        scope, parameters = _scope(user_id, guild_id, dms_only)
        rows = await self._db.fetch_all(
            f"""
            SELECT jobs.* FROM jobs_fts JOIN jobs ON jobs.id = jobs_fts.rowid
            WHERE jobs_fts MATCH ?{scope}
            ORDER BY jobs.id DESC LIMIT ? OFFSET ?
            """,
            (query, *parameters, limit, offset),
        )
        return [job_from_row(row) for row in rows]

    async def _page(self, scope: str, parameters: list[Any], limit: int, offset: int) -> list[JobRecord]:
        rows = await self._db.fetch_all(
            f"SELECT * FROM jobs WHERE 1{scope} ORDER BY id DESC LIMIT ? OFFSET ?",
            (*parameters, limit, offset),
        )
        return [job_from_row(row) for row in rows]
