"""What happens to a job, published to whoever listens (the bot, the CLI, tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from PIL import Image

from storage.records import ImageRecord


@dataclass(frozen=True)
class JobEvent:
    """Base of all job events."""

    job_id: int


@dataclass(frozen=True)
class JobQueued(JobEvent):
    """The job's place in the queue (1 = next) and estimated seconds until it finishes."""

    position: int
    eta_seconds: float | None


@dataclass(frozen=True)
class JobStarted(JobEvent):
    """The job went to the GPU, sharing the call with `batch_images` images in all."""

    batch_images: int


@dataclass(frozen=True)
class JobProgress(JobEvent):
    """One sampling step finished; previews (one per image of this job) come every few steps."""

    step: int
    total: int
    previews: tuple[Image.Image, ...] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class JobDone(JobEvent):
    """The job's images are stored."""

    images: tuple[ImageRecord, ...]


@dataclass(frozen=True)
class JobFailed(JobEvent):
    """The job failed; `error` is worded for its requester."""

    error: str


@dataclass(frozen=True)
class JobCancelled(JobEvent):
    """The job was cancelled before it finished."""


FINAL_EVENTS = (JobDone, JobFailed, JobCancelled)


class Subscription:
    """A subscriber's stream of events, registered from the moment it is created.

    Iterating ends after the final event of the job it follows; a subscription to all jobs runs until
    closed. Use it as a context manager so it always unregisters.
    """

    def __init__(self, bus: EventBus, job_id: int | None) -> None:
        self.job_id = job_id
        self._bus = bus
        self._queue: asyncio.Queue[JobEvent] = asyncio.Queue()

    def _offer(self, event: JobEvent) -> None:
        if self.job_id is None or self.job_id == event.job_id:
            self._queue.put_nowait(event)

    async def get(self) -> JobEvent:
        """The next event."""
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving events."""
        self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[JobEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[JobEvent]:
        while True:
            event = await self._queue.get()
            yield event
            if self.job_id is not None and isinstance(event, FINAL_EVENTS):
                return


class EventBus:
    """Fan-out of job events to subscribers, on the event loop."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []

    def publish(self, event: JobEvent) -> None:
        """Hand an event to every interested subscriber. Call on the event loop."""
        for subscription in list(self._subscriptions):
            subscription._offer(event)

    def subscribe(self, job_id: int | None = None) -> Subscription:
        """Events for one job, or for every job when job_id is None."""
        subscription = Subscription(self, job_id)
        self._subscriptions.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
