"""The store: jobs, their images and the history around them, in one SQLite file plus image files."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite
from PIL import Image

from generation.request import GenerationRequest
from generation.results import GeneratedImage
from storage.database import Clock, Database, fetch_all, fetch_one, utc_now
from storage.files import ImageFiles, WrittenFile
from storage.guilds import GuildRecords, add_usage
from storage.history import JobHistory
from storage.loras import LoraLibrary
from storage.migrations import apply_migrations
from storage.records import (
    ImageRecord,
    JobRecord,
    JobStatus,
    UnknownJob,
    from_db_time,
    image_from_row,
    job_from_row,
)
from storage.space import MIN_FREE_BYTES, free_bytes_below, is_storage_full, refuse_when_full
from storage.trainings import Trainings

_ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


class Store(JobHistory, GuildRecords, Trainings, LoraLibrary):
    """Jobs, images, trainings and LoRAs, durable across restarts. Build it with `await Store.open(...)`."""

    def __init__(self, db: Database, files: ImageFiles) -> None:
        self._db = db
        self._files = files

    @classmethod
    async def open(cls, db_path: Path | str, images_dir: Path | str, *, clock: Clock = utc_now) -> Self:
        """Create directories, open the database and apply pending migrations."""
        db_path, images_dir = Path(db_path), Path(images_dir)
        db_path.parent.mkdir(parents=True, exist_ok=True)
        images_dir.mkdir(parents=True, exist_ok=True)
        db = await Database.connect(db_path, clock)
        try:
            await apply_migrations(db.connection)
        except BaseException:
            await db.close()
            raise
        return cls(db, ImageFiles(images_dir))

    async def close(self) -> None:
        """Close the database connection."""
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def images_dir(self) -> Path:
        """Where image files live; stored paths are relative to it."""
        return self._files.root

    # --- jobs -------------------------------------------------------------------------------

    @refuse_when_full  # a full disk: the request is refused with a message, nothing half-stored
    async def create_job(
        self,
        request: GenerationRequest,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        origin: dict[str, Any] | None = None,
        weight: float = 1.0,
        source_job_id: int | None = None,
        source_index: int | None = None,
    ) -> JobRecord:
        """Commit a queued job (input images first) and count it in today's usage; durable on return."""
        init_file = await self._save_input(request.init_image)
        mask_file = await self._save_input(request.mask)
        async with self._db.write() as db:
            cursor = await db.execute(
                """
                INSERT INTO jobs (user_id, guild_id, channel_id, prompt, negative_prompt, model, mode,
                                  params, init_path, mask_path, status, weight, origin,
                                  source_job_id, source_index, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                (
                    user_id,
                    guild_id,
                    channel_id,
                    request.prompt,
                    request.negative_prompt,
                    request.model,
                    request.mode.value,
                    json.dumps(request.params(), sort_keys=True),
                    init_file.path if init_file else None,
                    mask_file.path if mask_file else None,
                    JobStatus.QUEUED.value,
                    float(weight),
                    None if origin is None else json.dumps(origin, sort_keys=True),
                    source_job_id,
                    source_index,
                    self._db.now(),
                ),
            )
            job_id = cursor.lastrowid
            # Usage counts at creation so queued-but-unfinished work already counts against limits.
            await add_usage(db, user_id, guild_id, self._db.today(), jobs=1, images=request.count)
            row = await fetch_one(db, "SELECT * FROM jobs WHERE id = ?", (job_id,))
        assert row is not None
        return job_from_row(row)

    async def _save_input(self, image: Image.Image | None) -> WrittenFile | None:
        if image is None:
            return None
        return await asyncio.to_thread(self._files.save_input, image)

    async def get_job(self, job_id: int) -> JobRecord | None:
        """The job with this id, or None."""
        row = await self._db.fetch_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else job_from_row(row)

    async def load_request(self, job: JobRecord) -> GenerationRequest:
        """Rebuild the job's GenerationRequest, reading its input images back from disk."""
        init_image = await self._load_image(job.init_path)
        mask = await self._load_image(job.mask_path)
        return GenerationRequest.from_params(job.params, init_image=init_image, mask=mask)

    async def _load_image(self, relative: str | None) -> Image.Image | None:
        if relative is None:
            return None
        return await asyncio.to_thread(self._files.load, relative)

    async def update_origin(self, job_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge keys into a job's origin (e.g. the id of the message that shows it); returns the result."""
        async with self._db.write() as db:
            row = await fetch_one(db, "SELECT origin FROM jobs WHERE id = ?", (job_id,))
            if row is None:
                raise UnknownJob(f"There is no job {job_id}.")
            origin = {**(json.loads(row["origin"]) if row["origin"] else {}), **changes}
            await db.execute("UPDATE jobs SET origin = ? WHERE id = ?", (json.dumps(origin, sort_keys=True), job_id))
        return origin

    async def mark_running(self, job_ids: Iterable[int]) -> list[int]:
        """Start queued jobs (attempts += 1); returns the ids actually started, skipping cancelled ones."""
        return await self._move(
            job_ids, JobStatus.QUEUED, JobStatus.RUNNING, "started_at = ?, attempts = attempts + 1", self._db.now()
        )

    async def finish_job(self, job_id: int, images: Sequence[GeneratedImage]) -> list[ImageRecord]:
        """Write the PNGs, then record them and mark the job done in one transaction.

        Calling it again for a done job returns the stored images. A job cancelled or failed
        meanwhile keeps its status; nothing is recorded and [] comes back.
        """
        job = await self.get_job(job_id)
        if job is None:
            raise UnknownJob(f"There is no job {job_id}.")
        if job.status is JobStatus.DONE:
            return await self.images_for_job(job_id)
        if job.status.is_finished:
            return []
        written = await asyncio.to_thread(self._write_outputs, job_id, images)
        try:
            async with self._db.write() as db:
                recorded = await self._record_images(db, job_id, images, written)
        except Exception:
            await self._discard_unreferenced(job_id, written)
            raise
        if not recorded:
            await self._discard_unreferenced(job_id, written)
        return await self.images_for_job(job_id)

    async def _record_images(
        self,
        db: aiosqlite.Connection,
        job_id: int,
        images: Sequence[GeneratedImage],
        written: Sequence[WrittenFile],
    ) -> bool:
        now = self._db.now()
        # The status guard makes a cancel, a failure or another finish that got here first win.
        cursor = await db.execute(
            f"UPDATE jobs SET status = ?, finished_at = ?, error = NULL "
            f"WHERE id = ? AND status IN ({_placeholders(len(_ACTIVE))})",
            (JobStatus.DONE.value, now, job_id, *_ACTIVE),
        )
        if cursor.rowcount != 1:
            return False
        translation = images[0].translation if images else None  # one per job: every image had the same texts
        if translation is not None:
            await db.execute(
                "UPDATE jobs SET prompt_language = ?, translated_prompt = ?, translated_negative = ? WHERE id = ?",
                (translation.language, translation.translated_prompt, translation.translated_negative, job_id),
            )
        await db.executemany(
            """
            INSERT INTO images (job_id, idx, seed, path, sha256, width, height, size_bytes, nsfw, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [
                (
                    job_id,
                    image.index,
                    image.seed,
                    file.path,
                    file.sha256,
                    image.image.width,
                    image.image.height,
                    file.size_bytes,
                    image.nsfw,
                    now,
                )
                for image, file in zip(images, written, strict=True)
            ],
        )
        return True

    async def _discard_unreferenced(self, job_id: int, written: Sequence[WrittenFile]) -> None:
        # A concurrent finish may have recorded the very same bytes under the same names: keep those.
        kept = {record.path for record in await self.images_for_job(job_id)}
        await asyncio.to_thread(self._files.delete, [file.path for file in written if file.path not in kept])

    def _write_outputs(self, job_id: int, images: Sequence[GeneratedImage]) -> list[WrittenFile]:
        # Encode everything before writing anything, so a bad image leaves no files behind.
        encoded = [(image.index, image.png()) for image in images]
        written: list[WrittenFile] = []
        try:
            for idx, data in encoded:
                written.append(self._files.save_output(job_id, idx, data))
        except BaseException:
            self._files.delete([file.path for file in written])
            raise
        return written

    async def fail_job(self, job_id: int, error: str) -> bool:
        """Mark a queued or running job failed with a message for its requester; True if it changed."""
        return await self._finish_without_images(job_id, JobStatus.FAILED, error)

    async def cancel_job(self, job_id: int) -> bool:
        """Cancel a queued or running job; True if it changed."""
        return await self._finish_without_images(job_id, JobStatus.CANCELLED, None)

    async def _finish_without_images(self, job_id: int, status: JobStatus, error: str | None) -> bool:
        async with self._db.write() as db:
            cursor = await db.execute(
                f"UPDATE jobs SET status = ?, error = ?, finished_at = ? "
                f"WHERE id = ? AND status IN ({_placeholders(len(_ACTIVE))})",
                (status.value, error, self._db.now(), job_id, *_ACTIVE),
            )
            return cursor.rowcount == 1

    async def requeue_interrupted(self, max_attempts: int) -> tuple[list[JobRecord], list[JobRecord]]:
        """At start-up: jobs left running go back to queued, or fail after `max_attempts` tries."""
        now = self._db.now()
        async with self._db.write() as db:
            requeued = await fetch_all(
                db,
                "UPDATE jobs SET status = ?, started_at = NULL WHERE status = ? AND attempts < ? RETURNING *",
                (JobStatus.QUEUED.value, JobStatus.RUNNING.value, max_attempts),
            )
            failed = await fetch_all(
                db,
                """
                UPDATE jobs SET status = ?, finished_at = ?,
                       error = 'Generation was interrupted '
                               || CASE attempts WHEN 1 THEN 'once' ELSE attempts || ' times' END
                               || '; giving up.'
                WHERE status = ? RETURNING *
                """,
                (JobStatus.FAILED.value, now, JobStatus.RUNNING.value),
            )
        return _sorted_jobs(requeued), _sorted_jobs(failed)

    async def return_to_queue(self, job_ids: Iterable[int]) -> list[int]:
        """Put running jobs back in the queue without counting the attempt (a graceful shutdown)."""
        return await self._move(
            job_ids, JobStatus.RUNNING, JobStatus.QUEUED, "started_at = NULL, attempts = MAX(attempts - 1, 0)"
        )

    async def requeue_lost(self, job_ids: Iterable[int], max_attempts: int) -> tuple[list[int], list[JobRecord]]:
        """Running jobs whose GPU worker was lost go back to queued, the attempt counted, or fail after
        `max_attempts` tries (as `requeue_interrupted` does after a crash); returns (re-queued ids, failed jobs)."""
        ids = list(job_ids)
        if not ids:
            return [], []
        marks = _placeholders(len(ids))
        async with self._db.write() as db:
            requeued = await fetch_all(
                db,
                f"UPDATE jobs SET status = ?, started_at = NULL "
                f"WHERE status = ? AND attempts < ? AND id IN ({marks}) RETURNING id",
                (JobStatus.QUEUED.value, JobStatus.RUNNING.value, max_attempts, *ids),
            )
            failed = await fetch_all(
                db,
                f"""
                UPDATE jobs SET status = ?, finished_at = ?,
                       error = 'Generation was interrupted '
                               || CASE attempts WHEN 1 THEN 'once' ELSE attempts || ' times' END
                               || '; giving up.'
                WHERE status = ? AND id IN ({marks}) RETURNING *
                """,
                (JobStatus.FAILED.value, self._db.now(), JobStatus.RUNNING.value, *ids),
            )
        moved = {row["id"] for row in requeued}
        return [job_id for job_id in ids if job_id in moved], _sorted_jobs(failed)

    async def _move(
        self, job_ids: Iterable[int], source: JobStatus, target: JobStatus, assignments: str, *values: Any
    ) -> list[int]:
        # The status guard skips jobs that moved on meanwhile (cancelled, say); callers get the ids that moved.
        ids = list(job_ids)
        if not ids:
            return []
        async with self._db.write() as db:
            rows = await fetch_all(
                db,
                f"UPDATE jobs SET status = ?, {assignments} "
                f"WHERE status = ? AND id IN ({_placeholders(len(ids))}) RETURNING id",
                (target.value, *values, source.value, *ids),
            )
        moved = {row["id"] for row in rows}
        return [job_id for job_id in ids if job_id in moved]

    async def count_by_status(self) -> dict[JobStatus, int]:
        """How many jobs are in each status, every status listed (0 when none); for metrics."""
        rows = await self._db.fetch_all("SELECT status, count(*) AS n FROM jobs GROUP BY status")  # jobs_by_status
        counts = dict.fromkeys(JobStatus, 0)
        for row in rows:
            counts[JobStatus(row["status"])] = int(row["n"])
        return counts

    async def has_room(self, margin: int = MIN_FREE_BYTES) -> bool:
        """Whether results can be stored again after a full disk: `margin` bytes free where the images and the
        database live, and a small file written (and removed) among the images the way an image is written."""
        rows = await self._db.fetch_all("PRAGMA database_list")
        directories = [self.images_dir, *(Path(row["file"]).parent for row in rows if row["file"])]

        def check() -> bool:
            if free_bytes_below(directories, margin) is not None:
                return False
            try:
                self._files.probe()
            except OSError as exc:
                if is_storage_full(exc):
                    return False
                raise
            return True

        return await asyncio.to_thread(check)

    async def queued_jobs(self) -> list[JobRecord]:
        """Every queued job, oldest first, to rebuild the in-memory queue."""
        rows = await self._db.fetch_all("SELECT * FROM jobs WHERE status = ? ORDER BY id", (JobStatus.QUEUED.value,))
        return [job_from_row(row) for row in rows]

    async def undelivered_jobs(self) -> list[JobRecord]:
        """Done or failed jobs whose result never reached the user, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM jobs WHERE delivered_at IS NULL AND status IN ('done', 'failed') ORDER BY id"
        )
        return [job_from_row(row) for row in rows]

    async def mark_delivered(self, job_id: int, where: str) -> bool:
        """Claim the delivery of a job's result; True only for the first caller, ever."""
        async with self._db.write() as db:
            cursor = await db.execute(
                "UPDATE jobs SET delivered_at = ?, delivered_where = ? WHERE id = ? AND delivered_at IS NULL",
                (self._db.now(), where, job_id),
            )
            return cursor.rowcount == 1

    async def count_pending(self, user_id: int) -> int:
        """How many of this user's jobs are queued or running."""
        row = await self._db.fetch_one(
            f"SELECT count(*) FROM jobs WHERE user_id = ? AND status IN ({_placeholders(len(_ACTIVE))})",
            (user_id, *_ACTIVE),
        )
        assert row is not None
        return int(row[0])

    async def last_job_at(self, user_id: int, guild_id: int | None) -> datetime | None:
        """When this user last asked for a job in this guild (None: in direct messages), if ever."""
        row = await self._db.fetch_one(
            "SELECT created_at FROM jobs WHERE user_id = ? AND guild_id IS ? ORDER BY id DESC LIMIT 1",
            (user_id, guild_id),
        )
        return None if row is None else from_db_time(row["created_at"])

    def now(self) -> datetime:
        """The store's clock, which job timestamps come from."""
        return self._db.utcnow()

    # --- images -----------------------------------------------------------------------------

    async def images_for_job(self, job_id: int) -> list[ImageRecord]:
        """The job's images that still exist, in index order."""
        rows = await self._db.fetch_all(
            "SELECT * FROM images WHERE job_id = ? AND deleted_at IS NULL ORDER BY idx", (job_id,)
        )
        return [image_from_row(row) for row in rows]

    def image_path(self, record: ImageRecord) -> Path:
        """The absolute path of an image's file."""
        return self._files.absolute(record.path)

    async def delete_job_images(self, job_id: int) -> int:
        """Delete a job's image files, keeping the rows (seed, hash) marked deleted; returns how many."""
        async with self._db.write() as db:
            rows = await fetch_all(db, "SELECT path, deleted_at FROM images WHERE job_id = ?", (job_id,))
            await db.execute(
                "UPDATE images SET deleted_at = ? WHERE job_id = ? AND deleted_at IS NULL",
                (self._db.now(), job_id),
            )
        # Rows first, files after: a crash in between leaves an orphan file, never a row pointing
        # at nothing. Already-deleted rows are included so a retry finishes an interrupted delete.
        await asyncio.to_thread(self._files.delete, [row["path"] for row in rows])
        return sum(1 for row in rows if row["deleted_at"] is None)


def _sorted_jobs(rows: Iterable[sqlite3.Row]) -> list[JobRecord]:
    # RETURNING gives no order guarantee; callers rebuild queues in creation order.
    return sorted((job_from_row(row) for row in rows), key=lambda job: job.id)
