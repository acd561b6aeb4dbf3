"""The single GPU loop: fair batches from the queue through the engine, results into the store.

One dedicated thread runs the pipeline; the event loop only awaits it. Progress crosses back with
`loop.call_soon_threadsafe`. The loop never dies: every failure is logged and answered on its job.
There is one Worker per GPU slot over one queue: the local GPU, or each Ray actor of `[cluster] backend = "ray"`
(jobs.cluster), whose engine proxy blocks this worker's thread while the actor runs the batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from generation.engine import Engine
from generation.errors import Cancelled, OutOfMemory, UserFacingError
from generation.request import GenerationRequest
from generation.results import GeneratedImage, StepProgress
from jobs.cluster import RemoteEngine, WorkerLost
from jobs.events import (
    JobDone,
    JobFailed,
    JobProgress,
    JobStarted,
    StorageFull,
    TrainingDone,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)
from jobs.fair_queue import QueuedJob
from jobs.queue import JobQueue
from jobs.training import TrainingRunner, chunk_cost, photo_loader, trained_spec
from storage.records import JobStatus, TrainingRecord
from storage.space import is_storage_full

log = logging.getLogger(__name__)
T = TypeVar("T")

UNEXPECTED_ERROR = "Something went wrong on our side while generating; it has been logged. Please try again."
TRAINING_ERROR = "Something went wrong on our side while training; it has been logged. Please try again."
# Results are encoded and stored while the GPU already runs the next batch; this bounds the backlog.
MAX_PENDING_SAVES = 2
# Model affinity: a job on the resident model may go first when due within a window of fair-queue work
# (pixel-steps). By default the window is the work the GPU does in the time one model load takes (both
# measured), so the preference never costs anyone more than the load it saves; before any measurement,
# this many pixel-steps (four SD 1.5 images at 512², 25 steps). Within it, jobs whose LoRAs are loaded
# already go before those that need one loaded (LoRA loads are far cheaper than model loads: same window).
AFFINITY_WINDOW = 4 * 512 * 512 * 25
# After a full disk: seconds between checks for room again (the last repeats), while new batches wait.
SPACE_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
STORAGE_FULL = "paused: storage full"
LOST = "lost: reconnecting"  # its Ray actor died mid-batch: waiting for Ray's restart or a new actor


class Worker:
    """Takes fair batches from the queue and runs them on the GPU thread, one call at a time."""

    def __init__(
        self,
        engine: Engine | RemoteEngine,
        queue: JobQueue,
        *,
        max_batch: int = 4,
        affinity_window: float | None = None,
        serves: frozenset[str] | None = None,
        max_attempts: int = 3,
        name: str = "gpu-worker",
        space_backoff: Sequence[float] = SPACE_BACKOFF,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.engine = engine
        self.name = name  # several workers ([cluster] workers): which one, in logs and metrics
        self.serves = serves  # the models this worker runs ([[cluster.worker]] models); None: every one
        self.max_attempts = max_attempts  # a job whose Ray worker was lost this often is failed, not retried
        self.lost = False  # its Ray actor died: waiting for a restarted or new one
        self.affinity_window = affinity_window  # None: measured (see AFFINITY_WINDOW)
        self.queue = queue
        self.store = queue.store
        self.bus = queue.bus
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu")
        self.training = TrainingRunner(engine, queue.store)
        self._trainings: set[int] = set()  # trainings this worker started: a graceful stop returns them
        self._interrupt = threading.Event()  # shutdown: stop the running call at the next step
        self._running: list[QueuedJob] = []
        self._saves: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.space_backoff = tuple(space_backoff)  # seconds between checks for room after a full disk
        self._sleep = sleep  # how it waits between those checks (tests: without waiting)
        self.storage_full = False  # results could not be stored: new batches wait until there is room
        self._unsaved: list[QueuedJob] = []  # jobs to put back in the queue once the store can write again
        self.batch_images: Counter[int] = Counter()  # images per GPU call → how many calls (metrics)

    @property
    def state(self) -> str:
        """What the worker does now: "starting", "idle", "running", "training", "paused: storage full",
        "lost: reconnecting" (its Ray actor died), "stopped", or "died" (its loop ended without being stopped:
        a bug, reported by /healthz)."""
        task = self._task
        if task is None:
            return "starting"
        if task.done():
            return "stopped" if self._stopping else "died"
        if self.lost:
            return LOST
        if self.storage_full:
            return STORAGE_FULL
        if self._running:
            return "training" if self._running[0].training_id is not None else "running"
        return "idle"

    def start(self) -> asyncio.Task[None]:
        """Run the loop as a task on the current event loop."""
        self._task = asyncio.create_task(self.run(), name=self.name)
        return self._task

    async def load(self, model: str) -> None:
        """Load a model on the GPU thread (before start: so the first job does not wait for it)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.engine.load, model)

    async def call_on_gpu(self, function: Callable[..., T], *args: Any) -> T:
        """Run a short piece of GPU work (a caption, say) on the GPU thread, between two batches."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def run(self) -> None:
        """Take batches until stopped; never exits on a failure."""
        while not self._stopping:
            try:
                resident, adapters = self.engine.resident, self.engine.resident_loras
                batch = await self.queue.next_batch(self.max_batch, resident, self._window(), adapters, self.serves)
                if self.storage_full:
                    await self._wait_for_room()  # the batch waits too: it could not be stored either
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            try:
                if batch[0].training_id is not None:
                    await self._train(batch[0])
                else:
                    await self._run_batch(batch)
            except Exception as exc:
                if is_storage_full(exc) and batch[0].training_id is None:  # e.g. SQLite could not mark it running
                    log.warning("worker: storage full while starting batch %s: %s", [j.job_id for j in batch], exc)
                    await self._keep_for_later(batch)
                    continue
                log.exception("worker: batch %s failed unexpectedly", [j.job_id for j in batch])
                for job in batch:
                    if job.training_id is not None:
                        await self._fail_training(job.training_id, TRAINING_ERROR)
                    else:
                        await self._fail(job, UNEXPECTED_ERROR)
            finally:
                self.queue.cancelled_running.difference_update(job.job_id for job in batch)
                self._running = []

    def _window(self) -> float:
        if self.affinity_window is not None:
            return self.affinity_window
        rate, load = self.queue.meter.rate, self.engine.load_seconds
        return rate * load if rate and load else AFFINITY_WINDOW

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking work; let the running batch finish within `timeout`, else re-queue it."""
        self._stopping = True
        task = self._task
        if task is not None and not task.done():
            if not self._running:
                task.cancel()
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                self._interrupt.set()
            await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*self._saves, return_exceptions=True)
        self._executor.shutdown(wait=True)
        if self._unsaved:  # the next start finds them queued (if the store can write by now)
            await self._requeue_unsaved()
        if self._trainings:  # resumed at the next start from their checkpoints, without counting an attempt
            await self.store.return_trainings_to_queue(self._trainings)

    async def _train(self, job: QueuedJob) -> None:
        """One chunk of a training, then its progress recorded and its next chunk queued (or the LoRA made)."""
        training_id = job.training_id
        assert training_id is not None
        training = await self.store.get_training(training_id)
        if training is None or training.status.is_finished:
            return  # cancelled while it waited
        if training.status is JobStatus.QUEUED:
            if not await self.store.start_training(training_id):
                return
            training = await self.store.get_training(training_id)
            assert training is not None
        self._trainings.add(training_id)
        self._running = [job]
        loop = asyncio.get_running_loop()
        wanted = int((training.origin or {}).get("class_images", 0))
        if wanted and not training.class_photos and training.steps_done == 0:
            # Prior preservation: the class images are made (and stored) once, before the first step.
            made = await loop.run_in_executor(self._executor, self.training.make_class_images, training, wanted)
            training = await self.store.set_training_class_photos(training_id, made) or training
        rate = self.queue.meter.rate

        def on_step(step: int, total: int, loss: float) -> None:
            eta = chunk_cost(training, total - step) / rate if rate else None
            loop.call_soon_threadsafe(self.bus.publish, TrainingProgress(training_id, step, total, loss, eta))

        def should_cancel() -> bool:
            return self._interrupt.is_set() or job.job_id in self.queue.cancelled_running

        self.bus.publish(TrainingStarted(training_id, training.steps_done, training.total_steps))
        started = time.perf_counter()
        try:
            result = await loop.run_in_executor(
                self._executor,
                self.training.run_chunk,
                training,
                self.queue.training_chunk,
                photo_loader(self.store, training, loop),
                on_step,
                should_cancel,
            )
        except UserFacingError as exc:
            await self._fail_training(training_id, exc.user_message)
            return
        ran = result.step - training.steps_done
        if ran > 0:
            self.queue.meter.record(chunk_cost(training, ran), time.perf_counter() - started)
        if result.cancelled and not self._interrupt.is_set():
            self._trainings.discard(training_id)
            return  # by its member, who was told already
        await self.store.record_training_progress(
            training_id, steps_done=result.step, last_loss=result.loss, checkpoint_written=True
        )
        if result.cancelled:
            return  # a shutdown: stop() returns it to the queue, to resume from this checkpoint
        if result.done:
            await self._finish_training(training)
        else:
            self.queue.push_training(await self.store.get_training(training_id) or training)

    async def _finish_training(self, training: TrainingRecord) -> None:
        lora = await self.store.finish_training(training.id)
        self._trainings.discard(training.id)
        if self.queue.catalog is not None:
            self.queue.catalog.add_trained(trained_spec(lora, self.store.lora_path(lora)))
        try:
            loop = asyncio.get_running_loop()
            samples = await loop.run_in_executor(self._executor, self.training.make_samples, training, lora)
            await self.store.record_training_samples(training.id, samples)
        except Exception:  # the LoRA is made and stored: a sample that fails must not lose it
            log.exception("worker: could not make the sample images of training %d", training.id)
        self.bus.publish(TrainingDone(training.id, lora))

    async def _fail_training(self, training_id: int, error: str) -> None:
        self._trainings.discard(training_id)
        try:
            if await self.store.fail_training(training_id, error):
                self.bus.publish(TrainingFailed(training_id, error))
        except Exception:
            log.exception("worker: could not record failure of training %d", training_id)

    async def _run_batch(self, batch: list[QueuedJob]) -> None:
        started = set(await self.store.mark_running([job.job_id for job in batch]))
        jobs = [job for job in batch if job.job_id in started]
        self._running = jobs
        requests = []
        for job in jobs:
            record = await self.store.get_job(job.job_id)
            requests.append(await self.store.load_request(record))
        images = sum(r.count for r in requests)
        for job in jobs:
            self.bus.publish(JobStarted(job.job_id, images))
        await self._generate(jobs, requests)

    async def _generate(self, jobs: Sequence[QueuedJob], requests: Sequence[GenerationRequest]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._call_engine, loop, list(jobs), list(requests))
        except OutOfMemory as exc:
            if len(jobs) > 1:
                half = len(jobs) // 2
                log.warning("out of memory on a batch of %d jobs; splitting", len(jobs))
                await self._generate(jobs[:half], requests[:half])
                await self._generate(jobs[half:], requests[half:])
            else:
                await self._fail(jobs[0], exc.user_message)
            return
        except WorkerLost as exc:
            log.warning("worker %s: %s; its %d job(s) go back to the queue", self.name, exc, len(jobs))
            await self._requeue_lost(jobs)
            await self._recover()
            return
        except Cancelled:
            if self._interrupt.is_set():
                returned = await self.store.return_to_queue([job.job_id for job in jobs])
                self.queue.requeue([job for job in jobs if job.job_id in returned])
            return  # otherwise every job in it was cancelled, and already told so
        except UserFacingError as exc:
            if len(jobs) > 1:
                # Run them one by one so only the job that breaks fails.
                for job, request in zip(jobs, requests, strict=True):
                    await self._generate([job], [request])
            else:
                await self._fail(jobs[0], exc.user_message)
            return
        self.queue.meter.record(sum(job.cost for job in jobs), time.perf_counter() - started)
        self.batch_images[sum(request.count for request in requests)] += 1
        save = asyncio.create_task(self._save(jobs, results))
        self._saves.add(save)
        save.add_done_callback(self._saves.discard)
        if len(self._saves) >= MAX_PENDING_SAVES:
            await asyncio.wait(self._saves, return_when=asyncio.FIRST_COMPLETED)

    async def _save(self, jobs: Sequence[QueuedJob], results: list[list[GeneratedImage]]) -> None:
        for position, (job, images) in enumerate(zip(jobs, results, strict=True)):
            try:
                records = await self.store.finish_job(job.job_id, images)
            except Exception as exc:
                if is_storage_full(exc):
                    log.warning("worker: no room to store the images of job %d (%s); it waits", job.job_id, exc)
                    await self._keep_for_later(jobs[position:])  # the rest would not fit either
                    return
                log.exception("worker: could not store the images of job %d", job.job_id)
                await self._fail(job, UNEXPECTED_ERROR)
                continue
            if records:  # empty: cancelled while running, its images are dropped
                self.bus.publish(JobDone(job.job_id, tuple(records)))

    async def _keep_for_later(self, jobs: Sequence[QueuedJob]) -> None:
        """Storage is full: the jobs go back to the queue, not counted as an attempt (the disk is nobody's
        fault), their requesters hear why, and new batches wait until there is room again."""
        self.storage_full = True
        self._unsaved.extend(job for job in jobs if job not in self._unsaved)
        for job in jobs:
            self.bus.publish(StorageFull(job.job_id))
        await self._requeue_unsaved()

    async def _requeue_unsaved(self) -> bool:
        """Put the jobs that could not be stored back in the queue; False if the store cannot write yet."""
        jobs, self._unsaved = self._unsaved, []
        try:
            await self.store.return_to_queue([job.job_id for job in jobs])
            records = [await self.store.get_job(job.job_id) for job in jobs]
        except Exception as exc:
            if not is_storage_full(exc):
                log.exception("worker: could not return jobs %s to the queue", [job.job_id for job in jobs])
            self._unsaved = [*jobs, *self._unsaved]  # tried again at the next check for room
            return False
        # Queued in the store now (or still: a batch that could not even be marked running); not cancelled ones.
        self.queue.requeue([job for job, r in zip(jobs, records, strict=True) if r and r.status is JobStatus.QUEUED])
        return True

    async def _wait_for_room(self) -> None:
        """Check for room with back-off until the store can write again, then carry on."""
        checks = 0
        while self.storage_full:
            await self._sleep(self.space_backoff[min(checks, len(self.space_backoff) - 1)])
            checks += 1
            try:
                room = await self.store.has_room()
            except Exception:
                log.exception("worker: could not check for room on the disk")
                room = False
            if room and await self._requeue_unsaved():
                log.info("worker: there is room to store images again; resuming after %d check(s)", checks)
                self.storage_full = False

    async def _requeue_lost(self, jobs: Sequence[QueuedJob]) -> None:
        """Jobs whose Ray actor died go back to the queue, the attempt counted (a job that kills its worker each
        time is failed after `max_attempts`, as after crashes); the store's status guards keep a job from
        finishing twice."""
        requeued, failed = await self.store.requeue_lost([job.job_id for job in jobs], self.max_attempts)
        self.queue.requeue([job for job in jobs if job.job_id in requeued])
        for record in failed:
            self.bus.publish(JobFailed(record.id, record.error or UNEXPECTED_ERROR))

    async def _recover(self) -> None:
        """Wait, off the event loop, for the lost actor's restart (or a new actor); other workers take the work."""
        engine = self.engine
        assert isinstance(engine, RemoteEngine)  # only a remote engine loses its worker
        self.lost = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, engine.reconnect, lambda: self._stopping)
        finally:
            self.lost = False

    def _call_engine(
        self, loop: asyncio.AbstractEventLoop, jobs: list[QueuedJob], requests: list[GenerationRequest]
    ) -> list[list[GeneratedImage]]:
        # Runs on the GPU thread: only thread-safe hand-offs back to the loop from here.
        self.training.forget(unless_model=requests[0].model)  # its trainer would keep another model in memory
        offsets, position = [], 0
        for request in requests:
            offsets.append(position)
            position += request.count

        def on_progress(progress: StepProgress) -> None:
            for job, request, offset in zip(jobs, requests, offsets, strict=True):
                previews = progress.previews[offset : offset + request.count] if progress.previews else None
                event = JobProgress(job.job_id, progress.step, progress.total, previews)
                loop.call_soon_threadsafe(self.bus.publish, event)

        cancelled = self.queue.cancelled_running

        def should_cancel() -> bool:
            return self._interrupt.is_set() or all(job.job_id in cancelled for job in jobs)

        return self.engine.generate(requests, on_progress=on_progress, should_cancel=should_cancel)

    async def _fail(self, job: QueuedJob, error: str) -> None:
        try:
            if await self.store.fail_job(job.job_id, error):
                self.bus.publish(JobFailed(job.job_id, error))
        except Exception:
            log.exception("worker: could not record failure of job %d", job.job_id)
