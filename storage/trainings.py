"""Dreambooth LoRA trainings: durable jobs of their own, whose result is a row of the LoRA library.

A training is a durable job of its own: its photos are stored first (content-addressed, like img2img inputs),
then its row; each chunk records the steps done and the checkpoint written, so a restart resumes from there.
Files (photos, checkpoints, LoRAs) live under the store's files root; rows hold paths relative to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
from PIL import Image

from generation.atomic import write_atomic
from storage.database import Database, fetch_all, fetch_one
from storage.files import ImageFiles, WrittenFile
from storage.records import (
    JobStatus,
    LoraNameTaken,
    LoraRecord,
    StoredPhoto,
    TrainingRecord,
    UnknownTraining,
    lora_from_row,
    training_from_row,
)

_ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def _photo_json(files: Iterable[WrittenFile]) -> str:
    return json.dumps([{"path": file.path, "sha256": file.sha256} for file in files])


class Trainings:
    """Trainings: queued → running → done/failed/cancelled, each done one adding a LoRA."""

    _db: Database
    _files: ImageFiles

    # --- files ------------------------------------------------------------------------------

    @staticmethod
    def checkpoint_relative(training_id: int) -> str:
        """Where a training's checkpoint goes, relative to the files root (names chosen by us)."""
        return f"trainings/{int(training_id)}/checkpoint.pt"

    def checkpoint_file(self, training_id: int) -> Path:
        """The absolute path a training's trainer checkpoints to."""
        return self._files.absolute(self.checkpoint_relative(training_id))

    def lora_file(self, training_id: int) -> Path:
        """The absolute path a training's finished LoRA is written to before `finish_training`."""
        return self._files.absolute(f"loras/{int(training_id)}.safetensors")

    async def load_training_photos(self, training: TrainingRecord) -> tuple[list[Image.Image], list[Image.Image]]:
        """The training's photos and class photos, read back from disk in their stored order."""

        def load(photos: Sequence[StoredPhoto]) -> list[Image.Image]:
            return [self._files.load(photo.path) for photo in photos]

        return await asyncio.to_thread(load, training.photos), await asyncio.to_thread(load, training.class_photos)

    # --- trainings --------------------------------------------------------------------------

    async def create_training(
        self,
        *,
        user_id: int,
        guild_id: int | None,
        name: str,
        trigger_token: str,
        class_word: str,
        base_model: str,
        kind: str,
        settings: dict[str, Any],
        total_steps: int,
        photos: Sequence[Image.Image],
        class_photos: Sequence[Image.Image] = (),
        channel_id: int | None = None,
        origin: dict[str, Any] | None = None,
    ) -> TrainingRecord:
        """Store the photos, then commit a queued training; refuses a name the user already has."""
        saved = await asyncio.to_thread(lambda: [self._files.save_input(photo) for photo in photos])
        saved_class = await asyncio.to_thread(lambda: [self._files.save_input(photo) for photo in class_photos])
        async with self._db.write() as db:
            # Checked inside the write transaction, so two requests for one name cannot both pass.
            await self._refuse_taken(db, user_id, name)
            cursor = await db.execute(
                """
                INSERT INTO trainings (user_id, guild_id, channel_id, name, trigger_token, class_word, base_model,
                                       kind, settings, photos, class_photos, status, total_steps, created_at, origin)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                (
                    user_id,
                    guild_id,
                    channel_id,
                    name,
                    trigger_token,
                    class_word,
                    base_model,
                    kind,
                    json.dumps(settings, sort_keys=True),
                    _photo_json(saved),
                    _photo_json(saved_class),
                    JobStatus.QUEUED.value,
                    int(total_steps),
                    self._db.now(),
                    None if origin is None else json.dumps(origin, sort_keys=True),
                ),
            )
            row = await fetch_one(db, "SELECT * FROM trainings WHERE id = ?", (cursor.lastrowid,))
        assert row is not None
        return training_from_row(row)

    @staticmethod
    async def _refuse_taken(db: aiosqlite.Connection, user_id: int, name: str) -> None:
        lora = await fetch_one(
            db,
            "SELECT 1 FROM loras WHERE owner_id = ? AND name = ? COLLATE NOCASE AND deleted_at IS NULL",
            (user_id, name),
        )
        if lora is not None:
            raise LoraNameTaken(f"You already have a LoRA named '{name}': pick another name or delete that one.")
        training = await fetch_one(
            db,
            "SELECT id FROM trainings WHERE user_id = ? AND name = ? COLLATE NOCASE AND status IN (?, ?)",
            (user_id, name, *_ACTIVE),
        )
        if training is not None:
            raise LoraNameTaken(f"A training named '{name}' is already under way (training #{training['id']}).")

    async def set_training_class_photos(
        self, training_id: int, class_photos: Sequence[Image.Image]
    ) -> TrainingRecord | None:
        """Store the class images made for prior preservation before the first step; None if it moved on."""
        saved = await asyncio.to_thread(lambda: [self._files.save_input(photo) for photo in class_photos])
        async with self._db.write() as db:
            # Only before any step ran: a checkpoint's fingerprint covers the class images it trained with.
            await db.execute(
                "UPDATE trainings SET class_photos = ? WHERE id = ? AND steps_done = 0 AND status IN (?, ?)",
                (_photo_json(saved), training_id, *_ACTIVE),
            )
            row = await fetch_one(db, "SELECT * FROM trainings WHERE id = ?", (training_id,))
        return None if row is None else training_from_row(row)

    async def update_training_origin(self, training_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge `changes` into a training's origin (e.g. the id of the message that reports on it)."""
        async with self._db.write() as db:
            row = await fetch_one(db, "SELECT origin FROM trainings WHERE id = ?", (training_id,))
            if row is None:
                raise UnknownTraining(f"There is no training {training_id}.")
            origin = json.loads(row["origin"] or "{}") | changes
            await db.execute(
                "UPDATE trainings SET origin = ? WHERE id = ?", (json.dumps(origin, sort_keys=True), training_id)
            )
        return origin

    async def trainings_today(self, user_id: int, guild_id: int | None) -> int:
        """How many trainings this user asked for today (UTC) in this guild (None: direct messages)."""
        since = self._db.today().isoformat()
        row = await self._db.fetch_one(
            "SELECT count(*) FROM trainings WHERE user_id = ? AND guild_id IS ? AND created_at >= ?",
            (user_id, guild_id, since),
        )
        assert row is not None
        return int(row[0])

    async def get_training(self, training_id: int) -> TrainingRecord | None:
        """The training with this id, or None."""
        row = await self._db.fetch_one("SELECT * FROM trainings WHERE id = ?", (training_id,))
        return None if row is None else training_from_row(row)

    async def unfinished_training(self, user_id: int, name: str) -> TrainingRecord | None:
        """The user's queued or running training with this name (case-insensitive), if any."""
        row = await self._db.fetch_one(
            "SELECT * FROM trainings WHERE user_id = ? AND name = ? COLLATE NOCASE AND status IN (?, ?) "
            "ORDER BY id DESC LIMIT 1",
            (user_id, name, *_ACTIVE),
        )
        return None if row is None else training_from_row(row)

    async def queued_trainings(self) -> list[TrainingRecord]:
        """Every queued training the bot was asked for (the command line runs its own), oldest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM trainings WHERE status = ? AND origin IS NOT NULL ORDER BY id", (JobStatus.QUEUED.value,)
        )
        return [training_from_row(row) for row in rows]

    async def active_trainings(self, user_id: int) -> list[TrainingRecord]:
        """A user's queued or running trainings, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM trainings WHERE user_id = ? AND status IN (?, ?) ORDER BY id", (user_id, *_ACTIVE)
        )
        return [training_from_row(row) for row in rows]

    async def return_trainings_to_queue(self, training_ids: Iterable[int]) -> list[int]:
        """Running trainings back to queued without counting the attempt (a graceful stop); the ids moved."""
        ids = [int(i) for i in training_ids]
        if not ids:
            return []
        async with self._db.write() as db:
            rows = await fetch_all(
                db,
                f"UPDATE trainings SET status = ?, updated_at = ?, attempts = MAX(attempts - 1, 0) "
                f"WHERE status = ? AND id IN ({', '.join('?' * len(ids))}) RETURNING id",
                (JobStatus.QUEUED.value, self._db.now(), JobStatus.RUNNING.value, *ids),
            )
        return sorted(row["id"] for row in rows)

    async def start_training(self, training_id: int) -> bool:
        """Move a queued training to running (attempts += 1); False if it was not queued."""
        now = self._db.now()
        async with self._db.write() as db:
            cursor = await db.execute(
                "UPDATE trainings SET status = ?, started_at = ?, updated_at = ?, attempts = attempts + 1 "
                "WHERE id = ? AND status = ?",
                (JobStatus.RUNNING.value, now, now, training_id, JobStatus.QUEUED.value),
            )
            return cursor.rowcount == 1

    async def record_training_progress(
        self, training_id: int, *, steps_done: int, last_loss: float | None, checkpoint_written: bool
    ) -> bool:
        """After a chunk: steps done, the chunk's loss, and whether its checkpoint file is now on disk."""
        async with self._db.write() as db:
            cursor = await db.execute(
                "UPDATE trainings SET steps_done = ?, last_loss = ?, updated_at = ?, "
                "checkpoint_path = CASE WHEN ? THEN ? ELSE checkpoint_path END "
                "WHERE id = ? AND status = ?",
                (
                    int(steps_done),
                    last_loss,
                    self._db.now(),
                    int(checkpoint_written),
                    self.checkpoint_relative(training_id),
                    training_id,
                    JobStatus.RUNNING.value,
                ),
            )
            return cursor.rowcount == 1

    async def finish_training(self, training_id: int, *, shared: bool = False) -> LoraRecord:
        """Record the LoRA at `lora_file(training_id)` and mark the training done, in one transaction."""
        training = await self.get_training(training_id)
        if training is None:
            raise UnknownTraining(f"There is no training {training_id}.")
        path = self.lora_file(training_id)
        data = await asyncio.to_thread(path.read_bytes)
        relative = path.relative_to(self._files.root).as_posix()
        now = self._db.now()
        try:
            async with self._db.write() as db:
                cursor = await db.execute(
                    """
                    INSERT INTO loras (name, trigger_token, base_model, kind, path, sha256, size_bytes, owner_id,
                                       guild_id, shared, training_id, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                    (
                        training.name,
                        training.trigger_token,
                        training.base_model,
                        training.kind,
                        relative,
                        hashlib.sha256(data).hexdigest(),
                        len(data),
                        training.user_id,
                        training.guild_id,
                        int(shared),
                        training_id,
                        now,
                    ),
                )
                lora_id = cursor.lastrowid
                # The status guard: a training cancelled meanwhile must not turn into a LoRA.
                done = await db.execute(
                    "UPDATE trainings SET status = ?, lora_id = ?, steps_done = total_steps, finished_at = ?, "
                    "updated_at = ?, checkpoint_path = NULL, error = NULL WHERE id = ? AND status = ?",
                    (JobStatus.DONE.value, lora_id, now, now, training_id, JobStatus.RUNNING.value),
                )
                if done.rowcount != 1:
                    raise UnknownTraining(f"Training {training_id} is not running; nothing was recorded.")
                row = await fetch_one(db, "SELECT * FROM loras WHERE id = ?", (lora_id,))
        except sqlite3.IntegrityError:
            raise LoraNameTaken(f"You already have a LoRA named '{training.name}'.") from None
        assert row is not None
        # Rows first, then the checkpoint file: it is only needed to resume, and the training is done.
        await asyncio.to_thread(self._drop_checkpoint, training_id)
        return lora_from_row(row)

    def sample_relative(self, training_id: int, index: int) -> str:
        """Where a finished training's sample image goes, relative to the files root."""
        return f"loras/{int(training_id)}-sample-{int(index)}.png"

    async def record_training_samples(self, training_id: int, pngs: Sequence[bytes]) -> tuple[str, ...]:
        """Write the sample images (PNG bytes) made with a finished training's LoRA and record their paths."""
        paths = tuple(self.sample_relative(training_id, index) for index in range(len(pngs)))

        def write() -> None:
            for path, data in zip(paths, pngs, strict=True):
                write_atomic(self._files.absolute(path), data)

        await asyncio.to_thread(write)
        async with self._db.write() as db:
            await db.execute("UPDATE trainings SET samples = ? WHERE id = ?", (json.dumps(paths), training_id))
        return paths

    def sample_file(self, relative: str) -> Path:
        """The absolute path of a stored sample image."""
        return self._files.absolute(relative)

    async def undelivered_trainings(self) -> list[TrainingRecord]:
        """Trainings asked for on Discord that ended but whose final message was never sent, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM trainings WHERE origin IS NOT NULL AND delivered_at IS NULL AND status IN (?, ?, ?) "
            "ORDER BY id",
            (JobStatus.DONE.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value),
        )
        return [training_from_row(row) for row in rows]

    async def mark_training_delivered(self, training_id: int) -> None:
        """Record that a training's final message went out (it is not sent again)."""
        async with self._db.write() as db:
            await db.execute(
                "UPDATE trainings SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
                (self._db.now(), training_id),
            )

    def _drop_checkpoint(self, training_id: int) -> None:
        checkpoint = self.checkpoint_file(training_id)
        checkpoint.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (a stray temp file) or already gone: leave it
            checkpoint.parent.rmdir()

    async def fail_training(self, training_id: int, error: str) -> bool:
        """Mark a queued or running training failed with a message for its requester; True if it changed."""
        return await self._end_training(training_id, JobStatus.FAILED, error)

    async def cancel_training(self, training_id: int) -> bool:
        """Cancel a queued or running training; True if it changed."""
        return await self._end_training(training_id, JobStatus.CANCELLED, None)

    async def _end_training(self, training_id: int, status: JobStatus, error: str | None) -> bool:
        now = self._db.now()
        async with self._db.write() as db:
            cursor = await db.execute(
                "UPDATE trainings SET status = ?, error = ?, finished_at = ?, updated_at = ? "
                "WHERE id = ? AND status IN (?, ?)",
                (status.value, error, now, now, training_id, *_ACTIVE),
            )
            return cursor.rowcount == 1

    async def requeue_interrupted_trainings(
        self, max_attempts: int, *, training_id: int | None = None
    ) -> tuple[list[TrainingRecord], list[TrainingRecord]]:
        """At start-up: trainings left running go back to queued (to resume), or fail after `max_attempts`.

        `training_id` limits this to one training (the command line resuming its own); without it, to the
        trainings the bot was asked for (the command line's resume when the command is run again)."""
        now = self._db.now()
        only, only_values = ("AND origin IS NOT NULL", ()) if training_id is None else ("AND id = ?", (training_id,))
        async with self._db.write() as db:
            requeued = await fetch_all(
                db,
                f"UPDATE trainings SET status = ?, updated_at = ? WHERE status = ? AND attempts < ? {only} RETURNING *",
                (JobStatus.QUEUED.value, now, JobStatus.RUNNING.value, max_attempts, *only_values),
            )
            failed = await fetch_all(
                db,
                "UPDATE trainings SET status = ?, finished_at = ?, updated_at = ?, "
                "error = 'Training was interrupted ' || attempts || ' time(s); giving up.' "
                f"WHERE status = ? {only} RETURNING *",
                (JobStatus.FAILED.value, now, now, JobStatus.RUNNING.value, *only_values),
            )
        return _by_id(requeued), _by_id(failed)


def _by_id(rows: Iterable[sqlite3.Row]) -> list[TrainingRecord]:
    # RETURNING gives no order guarantee.
    return sorted((training_from_row(row) for row in rows), key=lambda training: training.id)
