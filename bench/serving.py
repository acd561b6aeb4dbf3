"""The real serving path for benchmarks: Store (SQLite in a temp dir) + EventBus + JobQueue + Worker.

Latency is measured from just before `JobQueue.submit` to the moment the JobDone event reaches the event
loop, i.e. after the images are encoded, written and committed.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from PIL import Image

from generation.engine import Engine
from generation.request import GenerationRequest
from jobs.events import EventBus, JobCancelled, JobDone, JobFailed, JobStarted
from jobs.limits import Limits
from jobs.queue import JobQueue, Requester
from jobs.worker import Worker
from storage.store import Store

RequestFactory = Callable[[int, int], GenerationRequest]  # (user, seed) -> request


@dataclass(frozen=True)
class Finished:
    """One job through the queue: when it was submitted, how long until its final event, and how it ended."""

    job_id: int
    submitted: float  # perf_counter seconds
    latency: float  # seconds, submit -> final event
    error: str | None  # None: JobDone
    batch_images: int  # images in the pipeline call it ran in (0 if it never started)


@dataclass
class LoadResult:
    """What a load run measured."""

    latencies: list[float] = field(default_factory=list)  # seconds, submit -> JobDone, finished jobs only
    images: int = 0
    failures: list[str] = field(default_factory=list)
    calls: float = 0.0  # pipeline calls, from JobStarted.batch_images
    wall: float = 0.0  # first submit -> last final event, seconds

    @property
    def images_per_second(self) -> float:
        """Finished images over the run's wall time."""
        return self.images / self.wall if self.wall > 0 else 0.0

    @property
    def mean_batch(self) -> float:
        """Images per pipeline call, averaged over calls."""
        return self.images / self.calls if self.calls else 0.0


class ServingRig:
    """Store + bus + queue + worker around one engine, in a temporary directory; an async context manager."""

    def __init__(self, engine: Engine, max_batch: int) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._tmp = tempfile.TemporaryDirectory(prefix="imagine-bench-")
        self._done: dict[int, tuple[float, str | None]] = {}  # job -> (time, error)
        self._waiters: dict[int, asyncio.Future[tuple[float, str | None]]] = {}
        self._batch_images: dict[int, int] = {}

    async def __aenter__(self) -> ServingRig:
        root = Path(self._tmp.name)
        self.store = await Store.open(root / "bench.sqlite3", root / "images")
        self.queue = JobQueue(self.store, EventBus(), Limits.unlimited())
        self.worker = Worker(self.engine, self.queue, max_batch=self.max_batch)
        self._subscription = self.queue.bus.subscribe()
        self._dispatcher = asyncio.create_task(self._dispatch())
        self.worker.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.worker.stop(timeout=60)
        self._dispatcher.cancel()
        await asyncio.gather(self._dispatcher, return_exceptions=True)
        self._subscription.close()
        await self.store.close()
        self._tmp.cleanup()

    async def _dispatch(self) -> None:
        while True:
            event = await self._subscription.get()
            if isinstance(event, JobStarted):
                self._batch_images[event.job_id] = event.batch_images
            elif isinstance(event, JobDone | JobFailed | JobCancelled):
                error = None if isinstance(event, JobDone) else getattr(event, "error", "cancelled")
                outcome = (time.perf_counter(), error)
                self._done[event.job_id] = outcome
                waiter = self._waiters.pop(event.job_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(outcome)

    async def run_job(self, request: GenerationRequest, user: int) -> Finished:
        """Submit one job and wait for its final event."""
        start = time.perf_counter()
        ticket = await self.queue.submit(request, Requester(user_id=user, guild_id=1, channel_id=1))
        job_id = ticket.job.id
        outcome = self._done.get(job_id)
        if outcome is None:
            future = asyncio.get_running_loop().create_future()
            self._waiters[job_id] = future
            outcome = await future
        return Finished(job_id, start, outcome[0] - start, outcome[1], self._batch_images.get(job_id, 0))

    async def stored_images(self, job_id: int) -> list[Image.Image]:
        """A finished job's images, read back from the files the store wrote."""
        images = []
        for record in await self.store.images_for_job(job_id):
            with Image.open(self.store.image_path(record)) as picture:
                images.append(picture.convert("RGB"))
        return images

    async def closed_loop(self, make: RequestFactory, users: int, in_flight: int, jobs_per_user: int) -> LoadResult:
        """Each user keeps `in_flight` jobs outstanding until it has submitted `jobs_per_user`."""
        result, starts, ends = LoadResult(), [], []
        seeds = iter(range(10**9))

        async def chain(user: int, jobs: int) -> None:
            for _ in range(jobs):
                request = make(user, next(seeds))
                finished = await self.run_job(request, user)
                self._record(result, request, finished)
                starts.append(finished.submitted)
                ends.append(finished.submitted + finished.latency)

        chains = []
        for user in range(users):
            share = [jobs_per_user // in_flight + (1 if i < jobs_per_user % in_flight else 0) for i in range(in_flight)]
            chains += [chain(user, jobs) for jobs in share if jobs]
        await asyncio.gather(*chains)
        result.wall = max(ends) - min(starts)
        return result

    async def poisson(self, make: RequestFactory, users: int, rate: float, seconds: float, seed: int) -> LoadResult:
        """Open loop: requests arrive as a Poisson process of `rate` per second for `seconds`, random users."""
        rng = random.Random(seed)
        arrivals, clock = [], rng.expovariate(rate)
        while clock < seconds:
            arrivals.append((clock, rng.randrange(users), rng.randrange(2**31)))
            clock += rng.expovariate(rate)
        result, ends = LoadResult(), []
        begin = time.perf_counter()

        async def arrive(at: float, user: int, job_seed: int) -> None:
            await asyncio.sleep(max(0.0, begin + at - time.perf_counter()))
            request = make(user, job_seed)
            finished = await self.run_job(request, user)
            self._record(result, request, finished)
            ends.append(finished.submitted + finished.latency)

        await asyncio.gather(*(arrive(*arrival) for arrival in arrivals))
        result.wall = (max(ends) - begin) if ends else 0.0
        return result

    @staticmethod
    def _record(result: LoadResult, request: GenerationRequest, finished: Finished) -> None:
        if finished.error is not None:
            result.failures.append(finished.error)
            return
        result.latencies.append(finished.latency)
        result.images += request.count
        if finished.batch_images:
            result.calls += request.count / finished.batch_images
