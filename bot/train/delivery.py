"""Turns training events into Discord messages: queued, step/total with loss and ETA, then the samples.

Like bot.delivery for jobs: all that is needed to reach the member is the training's stored `origin`, edits
are coalesced (latest wins) and spaced out, and the final message is recorded as delivered once it went out.
A training outlives its interaction token (15 minutes), so after that its progress moves to a channel
message of the bot's own, which it keeps editing. The final message is retried through Discord outages the
same way (EventFollower._until_delivered): an edit that may have landed is tried again as an edit (see
bot.delivery), a post carries an enforced nonce; a channel that is gone ends the tries, recorded as delivered so
no start repeats them.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import discord

from bot.delivery import EDIT_INTERVAL
from bot.following import EventFollower
from bot.render import NO_MENTIONS
from bot.retry import Backoff, EditTries, Verdict, verdict
from bot.train import messages
from bot.train.views import lora_view, progress_view
from jobs.events import (
    Event,
    EventBus,
    TrainingCancelled,
    TrainingDone,
    TrainingEvent,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)
from storage.records import JobStatus, TrainingRecord
from storage.store import Store

log = logging.getLogger(__name__)

SendFirst = Callable[[str, discord.ui.View], Awaitable[int | None]]


@dataclass
class _Tracker:
    training: TrainingRecord
    responded: asyncio.Event = field(default_factory=asyncio.Event)
    latest: str | None = None
    last_edit: float = 0.0
    editor: asyncio.Task[None] | None = None


class TrainingDelivery(EventFollower):
    """Follows every training through the event bus and keeps its Discord message up to date."""

    task_name = "training-delivery"

    def __init__(
        self,
        client: discord.Client,
        store: Store,
        bus: EventBus,
        *,
        edit_interval: float = EDIT_INTERVAL,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(client, store, bus, clock, backoff=backoff)
        self.edit_interval = edit_interval
        self._trackers: dict[int, _Tracker] = {}

    def _editors(self) -> list[asyncio.Task[None] | None]:
        return [tracker.editor for tracker in self._trackers.values()]

    async def acknowledge(self, training: TrainingRecord, position: int, send: SendFirst) -> None:
        """Tell the member their training is queued with `send`, then keep that message up to date."""
        tracker = self._trackers.setdefault(training.id, _Tracker(training))
        message_id = None
        try:
            message_id = await send(messages.queued_text(training, position), progress_view(training.id))
        finally:
            origin = await self.store.update_training_origin(training.id, {"message_id": message_id})
            tracker.training = _with_origin(tracker.training, origin)
            tracker.responded.set()

    async def deliver_undelivered(self) -> None:
        """After a start: send every final message that never went out."""
        for training in await self.store.undelivered_trainings():
            self._spawn(self._finish(training.id))

    async def _handle(self, event: Event) -> None:
        if not isinstance(event, TrainingEvent):
            return
        if isinstance(event, TrainingDone | TrainingFailed | TrainingCancelled):
            self._spawn(self._finish(event.training_id))
            return
        tracker = await self._tracker(event.training_id)
        if tracker is None:
            return
        if isinstance(event, TrainingStarted):
            loss = tracker.training.last_loss if event.step else None
            tracker.latest = messages.progress_text(tracker.training, event.step, event.total, loss, None)
        elif isinstance(event, TrainingProgress):
            tracker.latest = messages.progress_text(
                tracker.training, event.step, event.total, event.loss, event.eta_seconds
            )
        if tracker.editor is None or tracker.editor.done():
            tracker.editor = asyncio.create_task(self._edit_loop(tracker))

    async def _tracker(self, training_id: int) -> _Tracker | None:
        tracker = self._trackers.get(training_id)
        if tracker is None:
            training = await self.store.get_training(training_id)
            if training is None or training.origin is None or training.status.is_finished:
                return None  # the command line's, or over already
            tracker = self._trackers.setdefault(training_id, _Tracker(training))
            tracker.responded.set()  # a training from before a restart: its first message went out then
        return tracker

    async def _edit_loop(self, tracker: _Tracker) -> None:
        await tracker.responded.wait()
        while tracker.latest is not None:
            wait = tracker.last_edit + self.edit_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            text, tracker.latest = tracker.latest, None
            tracker.last_edit = time.monotonic()
            try:
                await self._show(tracker, text)
            except discord.HTTPException as exc:  # progress is best effort; the final message is not
                log.warning("training delivery: progress edit for training %d dropped: %s", tracker.training.id, exc)

    async def _show(self, tracker: _Tracker, text: str) -> None:
        training = tracker.training
        origin = training.origin or {}
        view = progress_view(training.id)
        if self._token_usable(origin):
            await self._webhook(origin).edit_message(
                origin.get("message_id") or "@original", content=text, view=view, allowed_mentions=NO_MENTIONS
            )
        elif origin.get("posted_id"):
            message = self._channel(origin).get_partial_message(int(origin["posted_id"]))
            await message.edit(content=text, view=view, allowed_mentions=NO_MENTIONS)
        else:
            # The token is too old to edit the first message: carry on in a message of the bot's own.
            message = await self._channel(origin).send(content=text, view=view, allowed_mentions=NO_MENTIONS)
            updated = await self.store.update_training_origin(training.id, {"posted_id": message.id})
            tracker.training = _with_origin(training, updated)

    async def _finish(self, training_id: int) -> None:
        tracker = self._trackers.pop(training_id, None)
        try:
            if tracker is not None and tracker.editor is not None:
                tracker.latest = None
                tracker.editor.cancel()
                await asyncio.gather(tracker.editor, return_exceptions=True)
                await asyncio.wait_for(tracker.responded.wait(), timeout=10)
            training = await self.store.get_training(training_id)
            if training is None or training.origin is None or training.delivered_at is not None:
                return
            tries = EditTries()
            why = await self._until_delivered(
                lambda: self._deliver(training_id, tries), what=f"training {training_id}", guild_id=training.guild_id
            )
            if why is not None:
                await self.store.mark_training_delivered(training_id)  # gone for good: no start tries it again
        except Exception:
            log.exception("training delivery: could not deliver training %d; it stays undelivered", training_id)

    async def _deliver(self, training_id: int, tries: EditTries) -> None:
        """One attempt at the final message, recorded as delivered once it went out."""
        training = await self.store.get_training(training_id)
        if training is None or training.delivered_at is not None:
            return
        await self._send_final(training, tries)
        await self.store.mark_training_delivered(training_id)

    async def _send_final(self, training: TrainingRecord, tries: EditTries) -> None:
        origin = training.origin or {}
        view: discord.ui.View | None = None
        samples: list[bytes] = []
        if training.status is JobStatus.DONE and training.lora_id is not None:
            lora = await self.store.get_lora(training.lora_id)
            assert lora is not None
            paths = [self.store.sample_file(relative) for relative in training.samples]
            samples = await asyncio.to_thread(lambda: [path.read_bytes() for path in paths if path.is_file()])
            if lora.deleted_at is None:
                view = lora_view(lora)
            text, pinging = (messages.done_text(training, lora, len(samples), mention) for mention in (False, True))
        elif training.status is JobStatus.FAILED:
            error = training.error or "Training failed."
            text, pinging = (messages.failed_text(training, error, mention) for mention in (False, True))
        else:
            text = pinging = messages.cancelled_text(training)

        def files() -> list[discord.File]:  # a File can be sent once: fresh ones for each attempt
            return [discord.File(io.BytesIO(data), filename=f"sample-{i + 1}.png") for i, data in enumerate(samples)]

        if not tries.gone and self._token_usable(origin):
            try:
                await self._webhook(origin).edit_message(
                    origin.get("message_id") or "@original",
                    content=text,
                    attachments=files(),
                    view=view,  # None takes the Cancel button away
                    allowed_mentions=NO_MENTIONS,
                )
                return
            except Exception as exc:
                if not isinstance(exc, discord.HTTPException) and verdict(exc) is not Verdict.RETRY:
                    raise  # not Discord's doing
                if tries.failed_in_passing(exc):
                    raise  # it may have landed: the same edit again later, rather than a second copy now
                log.info("training delivery: editing the message of training %d failed (%s)", training.id, exc)
        if origin.get("posted_id"):
            # The progress message of our own says it is over; the result comes as a new message that pings.
            message = self._channel(origin).get_partial_message(int(origin["posted_id"]))
            try:
                await message.edit(content=text, view=None, allowed_mentions=NO_MENTIONS)
            except discord.HTTPException as exc:
                log.info("training delivery: could not close the progress of training %d: %s", training.id, exc)
        await self._channel(origin).send(
            content=pinging,
            files=files(),
            view=view or discord.utils.MISSING,
            allowed_mentions=discord.AllowedMentions(
                everyone=False, roles=False, users=[discord.Object(training.user_id)]
            ),
            nonce=f"train{training.id}.{int(training.created_at.timestamp())}",  # a repeated post returns the first
        )


def _with_origin(training: TrainingRecord, origin: dict[str, Any]) -> TrainingRecord:
    return replace(training, origin=origin)
