"""Durable storage for imagine-bot: one SQLite file for jobs and history, image files beside it.

Never imports discord.
"""

from storage.migrations import SchemaTooNew
from storage.records import (
    AuditEntry,
    ImageRecord,
    JobRecord,
    JobStatus,
    LoraNameTaken,
    LoraRecord,
    StoredPhoto,
    TrainingRecord,
    UnknownJob,
    UnknownTraining,
    Usage,
)
from storage.store import Store

__all__ = [
    "AuditEntry",
    "ImageRecord",
    "JobRecord",
    "JobStatus",
    "LoraNameTaken",
    "LoraRecord",
    "SchemaTooNew",
    "Store",
    "StoredPhoto",
    "TrainingRecord",
    "UnknownJob",
    "UnknownTraining",
    "Usage",
]
