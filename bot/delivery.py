"""Turns job events into Discord messages: queue position, live progress, then the result.

Everything needed to reach the user is in the job's stored `origin`, so delivery works the same after
a restart. Progress edits are coalesced (latest wins) and spaced out per message; the final result is
recorded as delivered once, after it was sent. While Discord fails, the result is tried again with back-off
(EventFollower._until_delivered); a channel that is gone is recorded as undeliverable.

Nothing twice: a result edit that may have landed (a 5xx, an answer lost with the connection) is tried again
as the same edit (repeating an edit changes nothing), and only after bot.retry.EDIT_TRIES tries posted anew; an
edit that was refused (4xx) is posted anew at once. A post carries a nonce Discord enforces, so a post whose
answer was lost and that is sent again returns the first message instead of making another.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import discord
from PIL import Image

from bot import render
from bot.following import EventFollower
from bot.moderation.nsfw import screen
from bot.retry import Backoff, EditTries, Verdict, verdict
from generation.metadata import png_bytes, read_parameters
from jobs.events import (
    Event,
    EventBus,
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobProgress,
    JobQueued,
    JobStarted,
    StorageFull,
)
from jobs.queue import Ticket
from storage.records import JobRecord, JobStatus
from storage.store import Store

log = logging.getLogger(__name__)

EDIT_INTERVAL = 1.5  # seconds between edits of one message; Discord rate-limits faster editing
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
EDIT_BACKOFF_MAX = 30.0  # longest pause after refused progress edits of one message
EDIT_SETTLE_TIMEOUT = 5.0  # how long a result waits for the progress edit in flight before it

ViewFactory = Callable[[JobRecord], discord.ui.View | None]
# Posts the first message about a job (text, view) and returns that message's id, if it has one.
SendFirst = Callable[[str, discord.ui.View | None], Awaitable[int | None]]


class TokenExpired(Exception):
    """The interaction token that let us edit the job's message is too old to use."""


@dataclass
class _Render:
    content: str
    preview: bytes | None = None


@dataclass
class _Tracker:
    job: JobRecord
    responded: asyncio.Event = field(default_factory=asyncio.Event)
    latest: _Render | None = None
    shown_position: int | None = None
    last_edit: float = 0.0
    editor: asyncio.Task[None] | None = None
    sending: bool = False
    failed_edits: int = 0
    message_gone: bool = False
    storage_full: bool = False  # its images could not be stored: say so until it runs again


class Delivery(EventFollower):
    """Follows every job through the event bus and keeps its Discord message up to date."""

    task_name = "delivery"

    def __init__(
        self,
        client: discord.Client,
        store: Store,
        bus: EventBus,
        *,
        result_view: ViewFactory,
        progress_view: ViewFactory,
        edit_interval: float = EDIT_INTERVAL,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(client, store, bus, clock, backoff=backoff)
        self.result_view = result_view
        self.progress_view = progress_view
        self.edit_interval = edit_interval
        self._trackers: dict[int, _Tracker] = {}
        self._finishing: set[int] = set()

    def _editors(self) -> list[asyncio.Task[None] | None]:
        return [tracker.editor for tracker in self._trackers.values()]

    async def acknowledge(self, ticket: Ticket, send: SendFirst) -> None:
        """Tell the requester their job is queued with `send`, then keep that message up to date.

        If sending fails the job is still followed (its result is posted to the channel) and the error raised.
        """
        job = ticket.job
        # Before any await: the job was queued just now, so it cannot have finished, and the events its
        # queueing published find this tracker instead of reading the job back from the store.
        tracker = self._trackers.setdefault(job.id, _Tracker(job))
        tracker.shown_position = ticket.position
        message_id = None
        try:
            text = render.queued_text(job, ticket.position, ticket.eta_seconds)
            message_id = await send(text, self.progress_view(job))
        finally:
            origin = await self.store.update_origin(job.id, {"message_id": message_id, "responded": True})
            tracker.job = _with_origin(tracker.job, origin)
            tracker.responded.set()

    async def deliver_undelivered(self) -> None:
        """After a start: send every finished result that never reached its requester."""
        for job in await self.store.undelivered_jobs():
            if (job.origin or {}).get("kind"):
                self._spawn(self._finish(job.id))

    async def _handle(self, event: Event) -> None:
        if not isinstance(event, JobEvent):
            return  # a training's: bot.train.delivery follows those
        if isinstance(event, JobDone | JobFailed | JobCancelled):
            self._spawn(self._finish(event.job_id))
            return
        tracker = await self._tracker(event.job_id)
        if tracker is None:
            return
        if isinstance(event, StorageFull):
            tracker.storage_full = True
            self._show(tracker, _Render(render.storage_full_text(tracker.job)))
        elif isinstance(event, JobQueued):
            if event.position == tracker.shown_position or tracker.storage_full:
                return
            tracker.shown_position = event.position
            self._show(tracker, _Render(render.queued_text(tracker.job, event.position, event.eta_seconds)))
        elif isinstance(event, JobStarted):
            tracker.storage_full = False
            total = int(tracker.job.params["steps"])
            self._show(tracker, _Render(render.progress_text(tracker.job, 0, total)))
        elif isinstance(event, JobProgress):
            preview = None
            if event.previews and (tracker.job.origin or {}).get("previews", True):  # see moderation.nsfw
                preview = await asyncio.to_thread(_preview_png, event.previews)
                if self._trackers.get(tracker.job.id) is not tracker:  # finished while it was encoded
                    return
            elif tracker.latest is not None:
                preview = tracker.latest.preview  # keep showing the last preview between previews
            self._show(tracker, _Render(render.progress_text(tracker.job, event.step, event.total), preview))

    async def _tracker(self, job_id: int) -> _Tracker | None:
        tracker = self._trackers.get(job_id)
        if tracker is None and job_id not in self._finishing:
            job = await self.store.get_job(job_id)
            if job is None or not (job.origin or {}).get("kind") or job.status.is_finished:
                return None
            tracker = self._trackers.setdefault(job_id, _Tracker(job))
            if job.origin.get("responded"):
                tracker.responded.set()
        return tracker

    def _show(self, tracker: _Tracker, update: _Render) -> None:
        tracker.latest = update
        if tracker.editor is None or tracker.editor.done():
            tracker.editor = asyncio.create_task(self._edit_loop(tracker))

    async def _edit_loop(self, tracker: _Tracker) -> None:
        await tracker.responded.wait()
        while tracker.latest is not None and not tracker.message_gone:
            wait = tracker.last_edit + self.edit_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            update, tracker.latest = tracker.latest, None
            tracker.last_edit = time.monotonic()
            tracker.sending = True
            try:
                await self._edit_progress(tracker, update)
                tracker.failed_edits = 0
            except (discord.NotFound, TokenExpired):
                tracker.message_gone = True  # deleted, or out of reach: the result will be posted anew
            except discord.HTTPException as exc:
                if exc.status == 401:  # the interaction token died early: stop trying it
                    tracker.message_gone = True
                # Back off: each refused edit spends Discord's invalid-request budget and shows nothing.
                tracker.failed_edits += 1
                tracker.last_edit += min(EDIT_BACKOFF_MAX, self.edit_interval * 2**tracker.failed_edits)
                log.warning("delivery: progress edit for job %d dropped: %s", tracker.job.id, exc)
            finally:
                tracker.sending = False

    async def _edit_progress(self, tracker: _Tracker, update: _Render) -> None:
        files = [discord.File(io.BytesIO(update.preview), filename="preview.png")] if update.preview else []
        view = self.progress_view(tracker.job)
        await self._edit(tracker.job, content=update.content, attachments=files, view=view)

    async def _finish(self, job_id: int) -> None:
        if job_id in self._finishing:
            return
        self._finishing.add(job_id)
        try:
            tracker = self._trackers.pop(job_id, None)
            if tracker is not None:
                if tracker.editor is not None:
                    tracker.latest = None
                    if tracker.sending:  # an edit already sent could land after the result and hide it
                        await asyncio.wait({tracker.editor}, timeout=EDIT_SETTLE_TIMEOUT)
                    tracker.editor.cancel()
                    await asyncio.gather(tracker.editor, return_exceptions=True)
                try:
                    await asyncio.wait_for(tracker.responded.wait(), timeout=10)
                except TimeoutError:
                    log.warning("delivery: job %d never got its first response; posting to the channel", job_id)
            job = await self.store.get_job(job_id)
            if job is None or job.delivered_at is not None or not (job.origin or {}).get("kind"):
                return
            if job.status is JobStatus.DONE and (job.origin or {}).get("creative"):
                return  # Upscale (Creative)'s first step: bot.upscale queues its img2img pass, shown in its place
            tries = EditTries(gone=tracker.message_gone if tracker else False)
            why = await self._until_delivered(
                lambda: self._deliver(job_id, tries), what=f"job {job_id}", guild_id=job.guild_id
            )
            if why is not None and job.status in (JobStatus.DONE, JobStatus.FAILED):
                await self.store.mark_delivered(job_id, why)  # never tried again, and /history says so
        except Exception:
            log.exception("delivery: could not deliver job %d; it stays undelivered for the next start", job_id)
        finally:
            self._finishing.discard(job_id)

    async def _deliver(self, job_id: int, tries: EditTries) -> None:
        """One attempt at the final message, recorded as delivered once it went out."""
        job = await self.store.get_job(job_id)  # again each time: deleted or delivered meanwhile is nothing to do
        if job is None or job.delivered_at is not None:
            return
        where = await self._send_final(job, tries)
        if job.status in (JobStatus.DONE, JobStatus.FAILED):
            await self.store.mark_delivered(job_id, where)

    async def _send_final(self, job: JobRecord, tries: EditTries) -> str:
        origin = job.origin or {}
        limit = int(origin.get("upload_limit") or DEFAULT_UPLOAD_LIMIT)
        data, spoiler, view = None, False, None
        if job.status is JobStatus.DONE:
            records = await self.store.images_for_job(job.id)
            screening = screen(job, records)  # the server's NSFW policy, recorded when the job was queued
            paths = [None if r.idx in screening.blocked else self.store.image_path(r) for r in records]
            data = await asyncio.to_thread(_result_png, paths, limit)
            spoiler, view = screening.spoiler, self.result_view(job)
            note = f"\n{screening.note}" if screening.note else ""
            seeds = [r.seed for r in records]
            text, text_pinging = (render.result_text(job, seeds, mention) + note for mention in (False, True))
        elif job.status is JobStatus.FAILED:
            error = job.error or "Generation failed."
            text, text_pinging = (render.failed_text(job, error, mention) for mention in (False, True))
        else:
            text = text_pinging = render.cancelled_text(job)

        def files() -> list[discord.File]:  # a File can be sent once: a fresh one for each attempt
            if data is None:
                return []
            payload, suffix = data
            return [discord.File(io.BytesIO(payload), filename=f"imagine-{job.id}.{suffix}", spoiler=spoiler)]

        if not tries.gone and self._can_edit(origin):
            try:
                await self._edit(job, content=text, attachments=files(), view=view)
                return f"edit:{origin.get('message_id') or '@original'}"
            except Exception as exc:
                if not isinstance(exc, discord.HTTPException | TokenExpired) and verdict(exc) is not Verdict.RETRY:
                    raise  # not Discord's doing
                if tries.failed_in_passing(exc):
                    raise  # it may have landed: the same edit again later, rather than a second copy now
                log.info("delivery: editing the message of job %d failed (%s); posting anew", job.id, exc)
        message = await self._channel(origin).send(
            content=text_pinging,
            files=files(),
            view=view or discord.utils.MISSING,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(job.user_id)]),
            nonce=_nonce(job),
        )
        return f"channel:{message.id}"

    def _can_edit(self, origin: dict[str, Any]) -> bool:
        if origin.get("kind") == "interaction":
            return self._token_usable(origin)
        return bool(origin.get("message_id"))

    async def _edit(self, job: JobRecord, **fields: Any) -> None:
        origin = job.origin or {}
        fields["allowed_mentions"] = render.NO_MENTIONS
        if fields.get("view") is None:
            fields.pop("view", None)
        if origin.get("kind") == "interaction":
            if not self._can_edit(origin):
                raise TokenExpired(f"the interaction token of job {job.id} has expired")
            # The original response is addressable as @original even before we learn its id.
            await self._webhook(origin).edit_message(origin.get("message_id") or "@original", **fields)  # type: ignore[arg-type]
        else:
            message = self._channel(origin).get_partial_message(int(origin["message_id"]))
            await message.edit(**fields)


def _preview_png(previews: Sequence[Image.Image]) -> bytes:
    """The live previews as one PNG (a worker thread's job: it encodes)."""
    # Not a result: no parameters to carry, nothing stored. zlib's fastest level: a smooth 256² preview encodes
    # in a fifth of the default's time (3 vs 15 ms) for a quarter more bytes; a batch makes several a second.
    return png_bytes(render.grid(list(previews)), compress_level=1)


def _result_png(paths: list[Path | None], limit: int) -> tuple[bytes, str] | None:
    """The file to upload and its suffix: one image as stored, or a 2x2 (or wider) grid carrying the first
    image's parameters, shrunk to a JPEG when over `limit` bytes. Decodes and encodes: run it in a thread.

    None marks an image withheld by the server's policy: a blank tile in a grid; None when nothing is left.
    """
    shown = [path for path in paths if path is not None]
    if not shown:
        return None
    if len(paths) == 1:
        return render.fit_upload(shown[0].read_bytes(), limit)
    images = {}
    for path in shown:
        with Image.open(path) as opened:
            images[path] = opened.convert("RGB")
    blank = Image.new("RGB", next(iter(images.values())).size, (32, 32, 32))
    parameters = read_parameters(shown[0].read_bytes()) or ""
    sheet = png_bytes(render.grid([images[p] if p is not None else blank for p in paths]), parameters)
    return render.fit_upload(sheet, limit)


def _with_origin(job: JobRecord, origin: dict[str, Any]) -> JobRecord:
    return replace(job, origin=origin)


def _nonce(job: JobRecord) -> str:
    """The post's nonce (Discord allows 25 characters): the same on every attempt, and unlike a later database's
    job of the same number."""
    return f"job{job.id}.{int(job.created_at.timestamp())}"
