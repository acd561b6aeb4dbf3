"""The durable job queue: limits at the door, SQLite first, then the fair scheduler.

A job is committed to the store before anyone hears it is queued; on start the in-memory queue is
rebuilt from the store, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from generation.catalog import Catalog
from generation.errors import InvalidRequest
from generation.request import GenerationRequest
from jobs.events import EventBus, JobCancelled, JobQueued, TrainingCancelled
from jobs.fair_queue import FairQueue, QueuedJob, ThroughputMeter, eta_seconds
from jobs.limits import LimitExceeded, Limits, check_request, check_upscale
from jobs.training import DEFAULT_CHUNK, training_job
from storage.records import JobRecord, TrainingRecord
from storage.store import Store

log = logging.getLogger(__name__)

TRAINING_NEEDS_LOCAL = (
    "LoRA training is not available on this bot: its images are made on a cluster of GPU workers (the "
    'operator\'s `[cluster] backend = "ray"`), and training needs the bot\'s own GPU (`backend = "local"`). '
    "/imagine works as usual."
)


@dataclass(frozen=True)
class Requester:
    """Who asked, and where; `weight` is their fair share (moderators may raise it)."""

    user_id: int
    guild_id: int | None = None
    channel_id: int | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class Ticket:
    """A queued job and where it stands."""

    job: JobRecord
    position: int
    eta_seconds: float | None


@dataclass(eq=False)
class _Waiter:
    """A worker waiting in next_batch, with what its GPU holds and which models it may run."""

    max_images: int
    resident: str | None
    window: float
    adapters: frozenset[str]
    serves: frozenset[str] | None  # None: every model
    future: asyncio.Future[list[QueuedJob]]

    def affinity(self, job: QueuedJob) -> int:
        """2: the job's model and LoRAs are loaded here already; 1: its model is; 0: neither."""
        if self.resident is None or job.model != self.resident:
            return 0
        return 2 if job.adapters <= self.adapters else 1

    def can_run(self, job: QueuedJob) -> bool:
        """Whether this worker serves the job's model ([[cluster.worker]] models)."""
        return self.serves is None or job.model in self.serves


def queued_job(job: JobRecord, request: GenerationRequest, catalog: Catalog | None = None) -> QueuedJob:
    """The scheduler's view of a stored job; its cost is the GPU work of its model's family."""
    return QueuedJob(
        job_id=job.id,
        user_id=job.user_id,
        guild_id=job.guild_id,
        cost=catalog.cost(request) if catalog else request.cost,
        batch_key=catalog.batch_key(request) if catalog else request.batch_key,
        images=request.count,
        weight=job.weight,
        model=request.model,
        adapters=frozenset(name for name, _ in request.loras),
    )


class JobQueue:
    """Accepts jobs under limits, keeps them durable, and hands the worker fair batches."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        limits: Limits,
        *,
        catalog: Catalog | None = None,
        training_chunk: int = DEFAULT_CHUNK,
        trainings: bool = True,
        workers: int = 1,
    ) -> None:
        self.store = store
        # False when the GPU workers are Ray actors: a training needs the bot's own GPU (jobs.training).
        self.trainings = trainings
        self.workers = workers  # GPU workers taking batches at once: ETAs divide the work ahead among them
        self.training_chunk = training_chunk  # training steps per turn on the GPU
        # The models and their families: refuses what a model cannot do, and costs jobs per family.
        self.catalog = catalog
        self.bus = bus
        self.meter = ThroughputMeter()
        self._fair = FairQueue()
        self._limits = limits
        self._waiters: list[_Waiter] = []  # workers in next_batch, in the order they came
        self._dispatch_soon = False
        self._admission = asyncio.Lock()
        self.cancelled_running: set[int] = set()  # the worker stops these at the next step

    async def restore(self, max_attempts: int) -> tuple[list[JobRecord], list[JobRecord]]:
        """Rebuild the queue from the store after a start; returns (re-queued, given-up) interrupted jobs."""
        requeued, failed = await self.store.requeue_interrupted(max_attempts)
        for job in await self.store.queued_jobs():
            if job.id not in self._fair:
                self._fair.push(queued_job(job, await self.store.load_request(job), self.catalog))
        if requeued or failed:
            log.warning("after restart: %d interrupted job(s) re-queued, %d given up", len(requeued), len(failed))
        resumed, abandoned = await self.store.requeue_interrupted_trainings(max_attempts)
        waiting = await self.store.queued_trainings()
        for training in waiting if self.trainings else ():
            self.push_training(training)
        if waiting and not self.trainings:
            log.warning(
                '%d training(s) stay queued in the database until the bot runs with backend = "local"', len(waiting)
            )
        if resumed or abandoned:
            log.warning("after restart: %d training(s) resume, %d given up", len(resumed), len(abandoned))
        self._changed()
        return requeued, failed

    def push_training(self, training: TrainingRecord) -> int:
        """Queue a training's next chunk (a stored, queued or running training); returns its position."""
        self.check_trainings()
        job = training_job(training, self.training_chunk)
        if job.job_id not in self._fair:
            self._fair.push(job)
        self._changed()
        return self._fair.position(job.job_id) or 1

    def check_trainings(self) -> None:
        """Refuse a LoRA training where the GPU workers cannot run one (Ray actors), saying why."""
        if not self.trainings:
            raise InvalidRequest(TRAINING_NEEDS_LOCAL)

    async def cancel_training(self, training_id: int) -> bool:
        """Cancel a queued or running training; True if it was still active. Permission checks are the caller's."""
        if self._fair.remove(-training_id) is None:
            self.cancelled_running.add(-training_id)  # its chunk stops at the next step
        cancelled = await self.store.cancel_training(training_id)
        if cancelled:
            self.bus.publish(TrainingCancelled(training_id))
            self._changed()
        return cancelled

    async def limits_for(self, guild_id: int | None) -> Limits:
        """The limits in force for a server (None: direct messages)."""
        settings = await self.store.get_guild_settings(guild_id) if guild_id is not None else {}
        return self._limits.with_overrides(settings)

    async def submit(
        self,
        request: GenerationRequest,
        requester: Requester,
        *,
        origin: dict[str, Any] | None = None,
        source: tuple[int, int] | None = None,
        limits: Limits | None = None,
    ) -> Ticket:
        """Check the model and limits, commit the job, then queue it; refusals name the rule and value.

        `limits`: the server's, when the caller has read its settings already (else read here).
        """
        if self.catalog is not None:
            self.catalog.check(request)  # a mode or option the model lacks: refused before anything is stored
        # Checks and commit under one lock: two quick clicks must not both slip under a limit.
        async with self._admission:
            await self._check_limits(request, requester, limits or await self.limits_for(requester.guild_id))
            job = await self.store.create_job(
                request,
                user_id=requester.user_id,
                guild_id=requester.guild_id,
                channel_id=requester.channel_id,
                origin=origin,
                weight=requester.weight,
                source_job_id=source[0] if source else None,
                source_index=source[1] if source else None,
            )
        self._fair.push(queued_job(job, request, self.catalog))
        self._changed()
        return Ticket(job=job, position=self.position(job.id) or 1, eta_seconds=self.eta(job.id))

    async def _check_limits(self, request: GenerationRequest, requester: Requester, limits: Limits) -> None:
        check_request(request, limits)
        if request.upscale is not None:  # the result, `scale` times the picture, within max_upscaled_pixels
            check_upscale(request.upscale.width, request.upscale.height, request.upscale.scale, limits)
        pending = await self.store.count_pending(requester.user_id)
        if pending >= limits.max_queued_per_user:
            raise LimitExceeded(
                f"You already have {pending} job(s) waiting; the limit is {limits.max_queued_per_user}. "
                "Wait for one to finish or cancel one."
            )
        if limits.daily_images_per_user:
            used = (await self.store.usage(requester.user_id, requester.guild_id)).images
            if used + request.count > limits.daily_images_per_user:
                raise LimitExceeded(
                    f"You have made {used} of your {limits.daily_images_per_user} images today (UTC); "
                    f"this request needs {request.count}."
                )
        if limits.cooldown_seconds > 0:
            last = await self.store.last_job_at(requester.user_id, requester.guild_id)
            wait = 0.0 if last is None else limits.cooldown_seconds - (self.store.now() - last).total_seconds()
            if wait > 0:
                raise LimitExceeded(
                    f"This server's cooldown between jobs is {limits.cooldown_seconds:g} s; "
                    f"try again in {math.ceil(wait)} s."
                )

    async def cancel(self, job_id: int) -> bool:
        """Cancel a queued or running job; True if it was still active. Permission checks are the caller's."""
        if self._fair.remove(job_id) is None:
            self.cancelled_running.add(job_id)
        cancelled = await self.store.cancel_job(job_id)
        if cancelled:
            self.bus.publish(JobCancelled(job_id))
            self._changed()
        return cancelled

    def requeue(self, jobs: list[QueuedJob]) -> None:
        """Put jobs taken for a batch back (a shutdown interrupted them)."""
        for job in jobs:
            if job.job_id not in self._fair:
                self._fair.push(job)
        self._changed()

    async def next_batch(
        self,
        max_images: int,
        resident: str | None = None,
        window: float = 0.0,
        adapters: frozenset[str] = frozenset(),
        serves: frozenset[str] | None = None,
    ) -> list[QueuedJob]:
        """Wait for work, then take a fair batch, up to max_images images.

        With `resident`, a job on that model may start first when it is due within `window` pixel-steps
        of the fair pick (FairQueue's model affinity), so mixed traffic does not reload on every batch;
        among those, one whose LoRAs are all in `adapters` (loaded already) before one that must load some.
        With several workers waiting, work goes first to the one holding its model (see `_dispatch`); with
        `serves`, this worker only gets jobs on those models.
        """
        waiter = _Waiter(max_images, resident, window, adapters, serves, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self._dispatch()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if waiter.future.done() and not waiter.future.cancelled():
                self.requeue(waiter.future.result())  # handed a batch just as its worker stopped
            raise

    def _dispatch(self) -> None:
        """Hand batches to waiting workers while there is work one of them can run.

        Each batch is a FairQueue pick with the chosen worker's own preference, so the fairness bound holds
        whichever worker takes it. The worker chosen is one that holds the model (and LoRAs) of the job it would
        take; among equals, one holding no model, then the one whose model the fewest queued jobs need, then the
        one that waited longest. So a batch goes to a free worker that has its model when there is one.
        """
        served = False
        while self._fair:
            self._waiters = [waiter for waiter in self._waiters if not waiter.future.done()]
            if not self._waiters:
                break
            head = self._fair.first_pick()
            assert head is not None
            demand: Counter[str | None] | None = None
            best: tuple[tuple[int, bool, int], _Waiter, Callable[[QueuedJob], int] | None, float] | None = None
            for waiter in self._waiters:
                prefer, window = self._plan(waiter, head)
                pick = self._fair.first_pick(prefer, window)
                if pick is None or not waiter.can_run(pick):
                    continue  # nothing queued is for this worker's models
                affinity = waiter.affinity(pick)
                if affinity == 0 and waiter.resident is not None and demand is None:
                    demand = Counter(job.model for job in self._fair.iter_order())
                score = (affinity, waiter.resident is None, -(demand or {}).get(waiter.resident, 0))
                if best is None or score > best[0]:
                    best = (score, waiter, prefer, window)
            if best is None:
                break
            _, waiter, prefer, window = best
            self._waiters.remove(waiter)
            waiter.future.set_result(self._fair.pop_batch(waiter.max_images, prefer, window))
            served = True
        if served:
            self._publish_positions()

    @staticmethod
    def _plan(waiter: _Waiter, head: QueuedJob) -> tuple[Callable[[QueuedJob], int] | None, float]:
        """The preference and window a worker pops with: its affinity when it can run the fair pick, else the
        earliest job it can run (the fair pick waits for a worker serving its model)."""
        if waiter.can_run(head):
            return (waiter.affinity if waiter.resident else None), waiter.window
        return (lambda job: int(waiter.can_run(job))), math.inf

    def position(self, job_id: int) -> int | None:
        """1 = next; None when the job is not waiting."""
        return self._fair.position(job_id)

    def eta(self, job_id: int) -> float | None:
        """Seconds until the job should be done, from measured throughput; None before any measurement."""
        eta = eta_seconds(self._fair, job_id, self.meter)
        return eta / self.workers if eta is not None else None

    def waiting(self, user_id: int | None = None) -> list[QueuedJob]:
        """Queued image jobs in the order they will run, optionally one user's only."""
        return [j for j in self._fair.order() if j.training_id is None and (user_id is None or j.user_id == user_id)]

    def __len__(self) -> int:
        return len(self._fair)

    def _changed(self) -> None:
        if self._fair and self._waiters and not self._dispatch_soon:
            # Soon, not now: whoever changed the queue (a submit) first reads the new job's place and ETA.
            self._dispatch_soon = True
            asyncio.get_running_loop().call_soon(self._dispatch_later)
        self._publish_positions()

    def _dispatch_later(self) -> None:
        self._dispatch_soon = False
        self._dispatch()

    def _publish_positions(self) -> None:
        rate = self.meter.rate * self.workers if self.meter.rate else None
        ahead = 0.0
        for position, job in enumerate(self._fair.iter_order(), start=1):
            ahead += job.cost
            if job.training_id is None:  # a training's message shows its steps, not its place
                self.bus.publish(JobQueued(job.job_id, position, ahead / rate if rate else None))
