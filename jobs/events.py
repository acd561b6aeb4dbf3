"""What happens to a job or a LoRA training, published to whoever listens (the bot, the CLI, tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from PIL import Image

from storage.records import ImageRecord, LoraRecord


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


@dataclass(frozen=True)
class StorageFull(JobEvent):
    """The job's images could not be stored (the disk is full): it is back in the queue and runs again once
    the worker finds room; not a final event."""


FINAL_EVENTS = (JobDone, JobFailed, JobCancelled)


@dataclass(frozen=True)
class TrainingEvent:
    """Base of the events of a LoRA training (its id is the trainings table's, not a job's)."""

    training_id: int


@dataclass(frozen=True)
class TrainingStarted(TrainingEvent):
    """A chunk of the training went to the GPU, at `step` of `total`."""

    step: int
    total: int


@dataclass(frozen=True)
class TrainingProgress(TrainingEvent):
    """One training step finished, with its loss; `eta_seconds` is the estimate for the whole training."""

    step: int
    total: int
    loss: float
    eta_seconds: float | None = None


@dataclass(frozen=True)
class TrainingDone(TrainingEvent):
    """The LoRA is in the library and its sample images are stored."""

    lora: LoraRecord


@dataclass(frozen=True)
class TrainingFailed(TrainingEvent):
    """The training failed; `error` is worded for its requester."""

    error: str


@dataclass(frozen=True)
class TrainingCancelled(TrainingEvent):
    """The training was cancelled before it finished."""


Event = JobEvent | TrainingEvent


class Subscription:
    """A subscriber's stream of events, registered from the moment it is created.

    Iterating ends after the final event of the job it follows; a subscription to all jobs runs until
    closed. Use it as a context manager so it always unregisters.
    """

    def __init__(self, bus: EventBus, job_id: int | None) -> None:
        self.job_id = job_id
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def _offer(self, event: Event) -> None:
        if self.job_id is None or self.job_id == getattr(event, "job_id", None):
            self._queue.put_nowait(event)

    async def get(self) -> Event:
        """The next event."""
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving events."""
        self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            event = await self._queue.get()
            yield event
            if self.job_id is not None and isinstance(event, FINAL_EVENTS):
                return


class EventBus:
    """Fan-out of job events to subscribers, on the event loop."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []

    def publish(self, event: Event) -> None:
        """Hand an event to every interested subscriber. Call on the event loop."""
        for subscription in list(self._subscriptions):
            subscription._offer(event)

    def subscribe(self, job_id: int | None = None) -> Subscription:
        """Events for one job, or every event (trainings' too) when job_id is None."""
        subscription = Subscription(self, job_id)
        self._subscriptions.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
