"""What the store hands back: frozen records built from SQLite rows, and the status enum."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from generation.request import Mode


class JobStatus(StrEnum):
    """Where a job is in its life; the value is what the `jobs.status` column holds."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        """True once the job will never run again."""
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


class UnknownJob(LookupError):
    """No job has this id."""


@dataclass(frozen=True)
class JobRecord:
    """One stored job; `params` is `GenerationRequest.params()` and `origin` is the bot's opaque dict."""

    id: int
    user_id: int
    guild_id: int | None
    channel_id: int | None
    status: JobStatus
    prompt: str
    negative_prompt: str
    model: str
    mode: Mode
    params: dict[str, Any]
    init_path: str | None
    mask_path: str | None
    attempts: int
    error: str | None
    weight: float
    origin: dict[str, Any] | None
    source_job_id: int | None
    source_index: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    delivered_at: datetime | None
    delivered_where: str | None
    # Set when the job ran with its prompt (or negative prompt) translated to English; None: used as typed.
    prompt_language: str | None = None
    translated_prompt: str | None = None
    translated_negative: str | None = None

    @property
    def count(self) -> int:
        """How many images the job asks for."""
        return int(self.params["count"])


@dataclass(frozen=True)
class ImageRecord:
    """One generated image; `path` is relative to the store's images directory."""

    id: int
    job_id: int
    idx: int
    seed: int
    path: str
    sha256: str
    width: int
    height: int
    size_bytes: int
    nsfw: bool | None
    created_at: datetime


@dataclass(frozen=True)
class Usage:
    """How much one user asked for in one guild (None: DMs) on one UTC day; counted at job creation."""

    user_id: int
    guild_id: int | None
    day: date
    jobs: int
    images: int


@dataclass(frozen=True)
class AuditEntry:
    """One change to a guild setting; `old`/`new` are None when the key was unset."""

    id: int
    guild_id: int
    user_id: int
    key: str
    old: Any
    new: Any
    at: datetime


def to_db_time(moment: datetime) -> str:
    """A UTC ISO-8601 string of fixed width, so text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_db_time(text: str | None) -> datetime | None:
    """The aware UTC datetime stored by `to_db_time`."""
    return None if text is None else datetime.fromisoformat(text)


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def job_from_row(row: sqlite3.Row) -> JobRecord:
    """Build a JobRecord from a `SELECT * FROM jobs` row."""
    created_at = from_db_time(row["created_at"])
    assert created_at is not None  # NOT NULL column
    return JobRecord(
        id=row["id"],
        user_id=row["user_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        status=JobStatus(row["status"]),
        prompt=row["prompt"],
        negative_prompt=row["negative_prompt"],
        model=row["model"],
        mode=Mode(row["mode"]),
        params=json.loads(row["params"]),
        init_path=row["init_path"],
        mask_path=row["mask_path"],
        attempts=row["attempts"],
        error=row["error"],
        weight=row["weight"],
        origin=_json_or_none(row["origin"]),
        source_job_id=row["source_job_id"],
        source_index=row["source_index"],
        created_at=created_at,
        started_at=from_db_time(row["started_at"]),
        finished_at=from_db_time(row["finished_at"]),
        delivered_at=from_db_time(row["delivered_at"]),
        delivered_where=row["delivered_where"],
        prompt_language=row["prompt_language"],
        translated_prompt=row["translated_prompt"],
        translated_negative=row["translated_negative"],
    )


def image_from_row(row: sqlite3.Row) -> ImageRecord:
    """Build an ImageRecord from a `SELECT * FROM images` row."""
    created_at = from_db_time(row["created_at"])
    assert created_at is not None  # NOT NULL column
    return ImageRecord(
        id=row["id"],
        job_id=row["job_id"],
        idx=row["idx"],
        seed=row["seed"],
        path=row["path"],
        sha256=row["sha256"],
        width=row["width"],
        height=row["height"],
        size_bytes=row["size_bytes"],
        nsfw=None if row["nsfw"] is None else bool(row["nsfw"]),
        created_at=created_at,
    )


def audit_from_row(row: sqlite3.Row) -> AuditEntry:
    """Build an AuditEntry from a `SELECT * FROM settings_audit` row."""
    at = from_db_time(row["at"])
    assert at is not None  # NOT NULL column
    return AuditEntry(
        id=row["id"],
        guild_id=row["guild_id"],
        user_id=row["user_id"],
        key=row["key"],
        old=_json_or_none(row["old"]),
        new=_json_or_none(row["new"]),
        at=at,
    )


class UnknownTraining(LookupError):
    """No training has this id."""


class LoraNameTaken(ValueError):
    """The owner already has a LoRA (or a training under way) with this name."""


@dataclass(frozen=True)
class StoredPhoto:
    """A training photo kept as a content-addressed input; `path` is relative to the files root."""

    path: str
    sha256: str


@dataclass(frozen=True)
class TrainingRecord:
    """One Dreambooth LoRA training job; `settings` is the JSON of `TrainingSettings`."""

    id: int
    user_id: int
    guild_id: int | None
    channel_id: int | None
    name: str
    trigger_token: str
    class_word: str
    base_model: str
    kind: str
    settings: dict[str, Any]
    photos: tuple[StoredPhoto, ...]
    class_photos: tuple[StoredPhoto, ...]
    status: JobStatus
    steps_done: int
    total_steps: int
    checkpoint_path: str | None
    last_loss: float | None
    attempts: int
    error: str | None
    lora_id: int | None
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None
    origin: dict[str, Any] | None = None  # where the bot reports on it (None: the command line)
    samples: tuple[str, ...] = ()  # sample images made with the finished LoRA, relative to the files root
    delivered_at: datetime | None = None


@dataclass(frozen=True)
class LoraRecord:
    """A trained LoRA in the library; `path` is relative to the files root."""

    id: int
    name: str
    trigger_token: str
    base_model: str
    kind: str
    path: str
    sha256: str
    size_bytes: int
    owner_id: int
    guild_id: int | None
    shared: bool
    training_id: int | None
    created_at: datetime
    deleted_at: datetime | None


def _photos(text: str) -> tuple[StoredPhoto, ...]:
    return tuple(StoredPhoto(path=item["path"], sha256=item["sha256"]) for item in json.loads(text))


def training_from_row(row: sqlite3.Row) -> TrainingRecord:
    """Build a TrainingRecord from a `SELECT * FROM trainings` row."""
    created_at = from_db_time(row["created_at"])
    assert created_at is not None  # NOT NULL column
    return TrainingRecord(
        id=row["id"],
        user_id=row["user_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        name=row["name"],
        trigger_token=row["trigger_token"],
        class_word=row["class_word"],
        base_model=row["base_model"],
        kind=row["kind"],
        settings=json.loads(row["settings"]),
        photos=_photos(row["photos"]),
        class_photos=_photos(row["class_photos"]),
        status=JobStatus(row["status"]),
        steps_done=row["steps_done"],
        total_steps=row["total_steps"],
        checkpoint_path=row["checkpoint_path"],
        last_loss=row["last_loss"],
        attempts=row["attempts"],
        error=row["error"],
        lora_id=row["lora_id"],
        created_at=created_at,
        started_at=from_db_time(row["started_at"]),
        updated_at=from_db_time(row["updated_at"]),
        finished_at=from_db_time(row["finished_at"]),
        origin=_json_or_none(row["origin"]),
        samples=tuple(json.loads(row["samples"])),
        delivered_at=from_db_time(row["delivered_at"]),
    )


def lora_from_row(row: sqlite3.Row) -> LoraRecord:
    """Build a LoraRecord from a `SELECT * FROM loras` row."""
    created_at = from_db_time(row["created_at"])
    assert created_at is not None  # NOT NULL column
    return LoraRecord(
        id=row["id"],
        name=row["name"],
        trigger_token=row["trigger_token"],
        base_model=row["base_model"],
        kind=row["kind"],
        path=row["path"],
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        owner_id=row["owner_id"],
        guild_id=row["guild_id"],
        shared=bool(row["shared"]),
        training_id=row["training_id"],
        created_at=created_at,
        deleted_at=from_db_time(row["deleted_at"]),
    )
