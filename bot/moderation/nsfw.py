"""What happens to images a safety checker flagged: shown, spoilered or blocked, per the server's policy.

The server's `nsfw` setting and whether the channel was age-restricted are recorded in the job's origin
when it is queued (the policy is read once per job, at the gate), so delivery, after a restart too,
decides without reading the settings again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.moderation.settings import DEFAULT_NSFW
from storage.records import ImageRecord, JobRecord


class Verdict(StrEnum):
    """How one image may be posted."""

    SHOW = "show"
    SPOILER = "spoiler"
    BLOCK = "block"


def verdict(policy: str, channel_nsfw: bool, flagged: bool | None) -> Verdict:
    """The fate of one image; unflagged and unchecked (None) images are always shown."""
    if not flagged:
        return Verdict.SHOW
    if policy == "spoiler":
        return Verdict.SPOILER
    if policy == "age-restricted" and channel_nsfw:
        return Verdict.SHOW
    return Verdict.BLOCK


def previews_allowed(policy: str, channel_nsfw: bool, checked: bool) -> bool:
    """Live previews come before the checker runs: show them only where a flagged image would be shown."""
    return not checked or verdict(policy, channel_nsfw, True) is Verdict.SHOW


@dataclass(frozen=True)
class Screening:
    """A job's images after the policy: which indexes are blocked, whether to spoiler the upload, and why."""

    blocked: frozenset[int]
    spoiler: bool
    note: str


def screen(job: JobRecord, records: Sequence[ImageRecord]) -> Screening:
    """Apply the NSFW policy recorded with the job (its server's, or that of direct messages) to its images."""
    if not any(r.nsfw for r in records):
        return Screening(frozenset(), False, "")
    origin = job.origin or {}
    policy = origin.get("nsfw", DEFAULT_NSFW)  # jobs queued before it was recorded: the strictest
    channel_nsfw = bool(origin.get("channel_nsfw"))
    fates = {r.idx: verdict(policy, channel_nsfw, r.nsfw) for r in records}
    blocked = frozenset(i for i, fate in fates.items() if fate is Verdict.BLOCK)
    spoiler = Verdict.SPOILER in fates.values()
    flagged = sum(1 for r in records if r.nsfw)
    if blocked:
        which = "The image was" if len(records) == 1 else f"{len(blocked)} of {len(records)} images were"
        where = " outside age-restricted channels" if policy == "age-restricted" else ""
        note = f"🚫 {which} flagged as NSFW and blocked by this server's policy (`nsfw`: {policy}{where})."
    elif spoiler:
        note = f"⚠️ {flagged} image(s) flagged as NSFW: behind a spoiler (`nsfw`: {policy})."
    else:
        note = ""
    return Screening(blocked, spoiler, note)
