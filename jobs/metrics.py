"""Prometheus metrics of the queue, the store and the GPU workers, read when scraped.

A custom collector (prometheus_client's `Collector`): the store's counts are read just before each scrape
(`refresh`), in-memory state (queue, workers, engines) during it, and only what cannot be read back later,
wait and run times and images made, is gathered from the event bus as it happens. Nothing here is global:
each bot registers its own collector in its own registry, so tests can run several.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from prometheus_client import Counter as CounterMetric
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from jobs.events import EventBus, JobDone, JobFailed, Subscription
from jobs.queue import JobQueue
from jobs.worker import LOST, STORAGE_FULL, Worker
from storage.records import JobStatus
from storage.store import Store

log = logging.getLogger(__name__)

TOP_GUILDS = 10  # queue depth is shown for this many servers with the most jobs waiting
WORKER_STATES = ("starting", "idle", "running", "training", STORAGE_FULL, LOST, "stopped", "died")
WAIT_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
RUN_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
DM_GUILD = "dm"  # the guild label of jobs from direct messages


class JobMetrics(Collector):
    """What the jobs layer knows, as metric families; `start()` follows the bus, `refresh()` reads the store."""

    def __init__(self, store: Store, queue: JobQueue, workers: Sequence[Worker]) -> None:
        self.store = store
        self.queue = queue
        self.workers = workers
        self._counts: dict[JobStatus, int] = dict.fromkeys(JobStatus, 0)
        # Never registered: their samples are yielded from collect(), in whatever registry holds this collector.
        self._wait = Histogram(
            "imagine_job_wait_seconds",
            "Seconds from queueing to the start of its last run",
            buckets=WAIT_BUCKETS,
            registry=None,
        )
        self._run = Histogram(
            "imagine_job_run_seconds",
            "Seconds from the start of a job's last run to its result",
            buckets=RUN_BUCKETS,
            registry=None,
        )
        self._images = CounterMetric("imagine_images", "Images made and stored", registry=None)
        self._task: asyncio.Task[None] | None = None

    def start(self, bus: EventBus | None = None) -> None:
        """Follow the event bus (the queue's by default) for times and images; call on the event loop."""
        subscription = (bus or self.queue.bus).subscribe()
        self._task = asyncio.create_task(self._follow(subscription), name="job-metrics")

    async def stop(self) -> None:
        """Stop following the bus."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> None:
        """Read the store's job counts; call before a scrape (a count over the status index)."""
        self._counts = await self.store.count_by_status()

    async def _follow(self, subscription: Subscription) -> None:
        with subscription:
            while True:
                event = await subscription.get()
                if not isinstance(event, JobDone | JobFailed):
                    continue
                try:
                    await self._observe(event)
                except Exception:  # a metric must never stop the bot; the next event is tried again
                    log.exception("metrics: could not record job %d", event.job_id)

    async def _observe(self, event: JobDone | JobFailed) -> None:
        if isinstance(event, JobDone):
            self._images.inc(len(event.images))
        job = await self.store.get_job(event.job_id)
        if job is None or job.started_at is None:
            return  # failed before it ever ran (e.g. interrupted too often)
        self._wait.observe(max(0.0, (job.started_at - job.created_at).total_seconds()))
        if job.finished_at is not None:
            self._run.observe(max(0.0, (job.finished_at - job.started_at).total_seconds()))

    def collect(self) -> Iterator[Metric]:
        """The metric families, read now."""
        jobs = GaugeMetricFamily("imagine_jobs", "Jobs in the store by status", labels=["status"])
        for status, count in self._counts.items():
            jobs.add_metric([status.value], count)
        yield jobs
        yield GaugeMetricFamily("imagine_queue_depth", "Jobs and training chunks waiting", value=len(self.queue))
        waiting = self.queue.waiting()
        yield GaugeMetricFamily("imagine_queue_jobs", "Image jobs waiting in the queue", value=len(waiting))
        by_guild = GaugeMetricFamily(
            "imagine_queue_jobs_by_guild", f"Image jobs waiting, for the {TOP_GUILDS} busiest servers", labels=["guild"]
        )
        for guild, count in Counter(job.guild_id for job in waiting).most_common(TOP_GUILDS):
            by_guild.add_metric([DM_GUILD if guild is None else str(guild)], count)
        yield by_guild
        yield from self._wait.collect()
        yield from self._run.collect()
        yield from self._images.collect()
        rate = self.queue.meter.rate
        if rate:
            yield GaugeMetricFamily(
                "imagine_throughput_pixel_steps_per_second",
                "Measured GPU throughput (width x height x steps x images per second), as ETAs use it",
                value=rate,
            )
        yield self._batches()
        yield from self._worker_families()
        yield from gpu_memory()

    def _batches(self) -> HistogramMetricFamily:
        sizes: Counter[int] = Counter()
        for worker in self.workers:
            sizes.update(getattr(worker, "batch_images", {}))
        buckets, below = [], 0
        for bound in BATCH_BUCKETS:
            below = sum(count for size, count in sizes.items() if size <= bound)
            buckets.append((str(float(bound)), below))
        buckets.append(("+Inf", sum(sizes.values())))
        return HistogramMetricFamily(
            "imagine_batch_images",
            "Images per GPU call",
            buckets=buckets,
            sum_value=sum(size * count for size, count in sizes.items()),
        )

    def _worker_families(self) -> Iterator[Metric]:
        states = GaugeMetricFamily(
            "imagine_worker_state", "1 for each GPU worker's current state", labels=["worker", "state"]
        )
        loads = CounterMetricFamily("imagine_model_loads", "Models loaded by each GPU worker", labels=["worker"])
        full = 0
        for index, worker in enumerate(self.workers):
            state, label = worker.state, worker_label(worker, index)
            full |= state == STORAGE_FULL
            for known in (*WORKER_STATES, *([state] if state not in WORKER_STATES else [])):
                states.add_metric([label, known], 1.0 if known == state else 0.0)
            loads.add_metric([label], getattr(worker.engine, "loads", 0))
        yield states
        yield loads
        yield GaugeMetricFamily(
            "imagine_storage_full", "1 while results cannot be stored (disk full) and new batches wait", value=full
        )


def worker_label(worker: Worker, index: int) -> str:
    """The `worker` label of a GPU worker: its name (`gpu-worker`, or `gpu-1`, `gpu-2`… on Ray), else its place."""
    return str(getattr(worker, "name", "") or index)


def gpu_memory() -> Iterator[Metric]:
    """CUDA memory of this process per device, once CUDA is in use here; nothing otherwise."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    allocated = GaugeMetricFamily("imagine_gpu_memory_allocated_bytes", "Memory held by tensors", labels=["device"])
    reserved = GaugeMetricFamily(
        "imagine_gpu_memory_reserved_bytes", "Memory reserved by the caching allocator", labels=["device"]
    )
    for index in range(torch.cuda.device_count()):
        device = f"cuda:{index}"
        allocated.add_metric([device], torch.cuda.memory_allocated(index))
        reserved.add_metric([device], torch.cuda.memory_reserved(index))
    yield allocated
    yield reserved
