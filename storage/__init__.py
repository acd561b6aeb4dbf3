"""Durable storage for imagine-bot: one SQLite file for jobs and history, image files beside it.

Never imports discord.
"""

from storage.migrations import SchemaTooNew
from storage.records import AuditEntry, ImageRecord, JobRecord, JobStatus, UnknownJob, Usage
from storage.store import Store

__all__ = [
    "AuditEntry",
    "ImageRecord",
    "JobRecord",
    "JobStatus",
    "SchemaTooNew",
    "Store",
    "UnknownJob",
    "Usage",
]
