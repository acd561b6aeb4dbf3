"""GPU workers as Ray actors: the real queue, store and workers, two CPU actors with the tiny models.

One Ray (tests/support/cluster.py) and one pair of actors for this module: starting an actor
imports torch in a new process, which takes seconds. The tests that kill an actor come last.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray

from generation.engine import Engine
from jobs.cluster import RemoteEngine
from jobs.events import EventBus, JobCancelled, JobDone, JobEvent, JobFailed, JobProgress, JobStarted
from jobs.fair_queue import FairQueue
from jobs.limits import Limits
from jobs.queue import JobQueue, Requester, Ticket, queued_job
from jobs.worker import Worker
from storage.records import JobStatus
from storage.store import Store
from tests.support.cluster import cpu_actors, ray_cluster, tiny_models  # noqa: F401  (ray_cluster: a fixture)
from tests.support.requests import txt2img
from tests.support.threads import one_torch_thread


@pytest.fixture(scope="module")
def actors(ray_cluster: None, tiny_sd_dir: Path, tiny_sdxl_dir: Path) -> Iterator[list[RemoteEngine]]:  # noqa: F811
    engines = cpu_actors(tiny_models(tiny_sd_dir, tiny_sdxl_dir))
    yield engines
    for engine in engines:
        engine.close()


@dataclass
class Cluster:
    store: Store
    bus: EventBus
    queue: JobQueue
    workers: list[Worker]


@pytest.fixture
async def cluster(actors: list[RemoteEngine], tmp_path: Path) -> AsyncIterator[Cluster]:
    """A queue and store of its own per test, one Worker per actor, as bot_parts builds them with backend ray."""
    store = await Store.open(tmp_path / "db.sqlite3", tmp_path / "images")
    bus = EventBus()
    queue = JobQueue(store, bus, Limits(max_steps=150, max_queued_per_user=50), trainings=False)
    workers = [Worker(engine, queue, max_batch=4, name=engine.name) for engine in actors]
    yield Cluster(store, bus, queue, workers)
    await asyncio.gather(*(worker.stop(timeout=10) for worker in workers))
    await store.close()


def member(n: int) -> Requester:
    return Requester(user_id=n, guild_id=1 + n % 2, channel_id=10)


async def collect_until_final(subscription, job_ids: set[int], timeout: float = 120) -> list[JobEvent]:
    """Events until every job in job_ids has had its final event."""
    events, open_jobs = [], set(job_ids)
    async with asyncio.timeout(timeout):
        while open_jobs:
            event = await subscription.get()
            events.append(event)
            if isinstance(event, JobDone | JobFailed | JobCancelled) and event.job_id in open_jobs:
                open_jobs.discard(event.job_id)
    return events


async def until(predicate: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def calls(worker: Worker) -> int:
    return sum(worker.batch_images.values())


def batches_started(events: list[JobEvent]) -> list[list[int]]:
    """The batches as they went to the GPU: a batch publishes its JobStarted events together (one image each)."""
    started = [e for e in events if isinstance(e, JobStarted)]
    batches, position = [], 0
    while position < len(started):
        size = started[position].batch_images
        batches.append([e.job_id for e in started[position : position + size]])
        position += size
    return batches


async def fair_batches(store: Store, tickets: list[Ticket], max_images: int) -> list[list[int]]:
    """The batches one worker would take from the same submissions: the single-GPU fair order."""
    fair = FairQueue()
    for ticket in tickets:
        fair.push(queued_job(ticket.job, await store.load_request(ticket.job)))
    batches = []
    while batch := fair.pop_batch(max_images):
        batches.append([job.job_id for job in batch])
    return batches


async def test_two_actors_deliver_24_jobs_of_6_users_once_each_fairly_as_the_local_engine_would(
    cluster: Cluster, tiny_sd_dir: Path, tiny_sdxl_dir: Path
) -> None:
    with cluster.bus.subscribe() as events:
        tickets = [await cluster.queue.submit(txt2img(f"job {i}", seed=100 + i), member(i % 6)) for i in range(24)]
        ids = {ticket.job.id for ticket in tickets}
        for worker in cluster.workers:
            worker.start()
        seen = await collect_until_final(events, ids)

    done = Counter(e.job_id for e in seen if isinstance(e, JobDone))
    assert done == Counter(ids) and not [e for e in seen if isinstance(e, JobFailed)]  # each delivered once
    for job_id in ids:
        job = await cluster.store.get_job(job_id)
        assert job.status is JobStatus.DONE and job.attempts == 1
        assert len(await cluster.store.images_for_job(job_id)) == 1
    assert all(calls(worker) > 0 for worker in cluster.workers), [calls(w) for w in cluster.workers]
    for job_id in ids:  # progress streamed back from the actors, step by step, previews among it
        steps = [e.step for e in seen if isinstance(e, JobProgress) and e.job_id == job_id]
        assert steps and steps == list(range(1, len(steps) + 1)), (job_id, steps)
    assert any(e.previews for e in seen if isinstance(e, JobProgress))

    # Fairness across workers: the batches are exactly the ones a single worker takes in fair order; the two
    # workers only start neighbouring batches in either order, so no user is ever more than 2 jobs ahead.
    batches = batches_started(seen)
    expected = await fair_batches(cluster.store, tickets, max_images=4)
    assert sorted(map(sorted, batches)) == sorted(map(sorted, expected))
    owner = {ticket.job.id: ticket.job.user_id for ticket in tickets}
    started = Counter[int]()
    for job_id in itertools.chain.from_iterable(batches):
        started[owner[job_id]] += 1
        assert max(started.values()) - min(started[user] for user in range(6)) <= 2, started

    # The same batches through a local Engine make the very same PNG files (same seeds, one torch thread).
    local = Engine(tiny_models(tiny_sd_dir, tiny_sdxl_dir), device="cpu", preview_every=2)
    with one_torch_thread():
        for batch in batches:
            requests = [await cluster.store.load_request(await cluster.store.get_job(job_id)) for job_id in batch]
            for job_id, (image,) in zip(batch, local.generate(requests), strict=True):
                (record,) = await cluster.store.images_for_job(job_id)
                assert cluster.store.image_path(record).read_bytes() == image.png()


async def test_a_job_goes_to_the_worker_holding_its_model_even_when_the_other_waited_longer(
    cluster: Cluster,
) -> None:
    small, large = cluster.workers
    await small.load("tiny")
    await large.load("tiny-xl")
    before = [small.engine.loads, large.engine.loads]
    large.start()
    await asyncio.sleep(0)  # `large` waits first
    small.start()
    await asyncio.sleep(0)
    # Each job arrives alone while both wait. A job's worker goes back to the end of the line, so the one
    # first in line is the other one whenever the same model comes twice in a row.
    models = ["tiny", "tiny", "tiny-xl", "tiny-xl", "tiny", "tiny", "tiny-xl", "tiny"]
    with cluster.bus.subscribe() as events:
        for n, model in enumerate(models):
            ticket = await cluster.queue.submit(txt2img(f"job {n}", model=model, seed=n), member(n))
            await collect_until_final(events, {ticket.job.id})
            await until(lambda: all(worker.state == "idle" for worker in cluster.workers))
            await asyncio.sleep(0)

    assert [small.engine.loads, large.engine.loads] == before  # no model was loaded again
    assert calls(small) == models.count("tiny") and calls(large) == models.count("tiny-xl")
    # Handing each job to whoever waited longest (a plain FIFO of workers) would have loaded a model this often:
    line, resident, naive = ["large", "small"], {"small": "tiny", "large": "tiny-xl"}, 0
    for model in models:
        taker = line.pop(0)
        naive += resident[taker] != model
        resident[taker] = model
        line.append(taker)
    assert naive >= 4


async def test_cancel_reaches_the_batch_running_on_an_actor(cluster: Cluster) -> None:
    worker = cluster.workers[0]
    worker.start()
    with cluster.bus.subscribe() as events:
        ticket = await cluster.queue.submit(txt2img("a long one", steps=150), member(1))
        seen: list[JobEvent] = []
        async with asyncio.timeout(60):
            while not any(isinstance(e, JobProgress) for e in seen):
                seen.append(await events.get())
        assert await cluster.queue.cancel(ticket.job.id)
        seen += await collect_until_final(events, {ticket.job.id})
        await until(lambda: worker.state == "idle")  # the actor answered: its engine stopped
        steps = [e.step for e in seen if isinstance(e, JobProgress) and e.job_id == ticket.job.id]
        assert max(steps) < 150  # stopped at a step, not run to the end
        job = await cluster.store.get_job(ticket.job.id)
        assert job.status is JobStatus.CANCELLED and await cluster.store.images_for_job(ticket.job.id) == []

        after = await cluster.queue.submit(txt2img("next"), member(2))  # the actor is free for the next batch
        final = await collect_until_final(events, {after.job.id})
    assert isinstance(final[-1], JobDone)


async def test_an_error_on_the_actor_reaches_the_job_worded_as_the_engine_words_it(cluster: Cluster) -> None:
    worker = cluster.workers[0]
    worker.start()
    with cluster.bus.subscribe() as events:
        bad = await cluster.queue.submit(txt2img("on a model the workers lack", model="nope"), member(1))
        (failed,) = [e for e in await collect_until_final(events, {bad.job.id}) if isinstance(e, JobFailed)]
        good = await cluster.queue.submit(txt2img("fine"), member(2))
        final = await collect_until_final(events, {good.job.id})
    assert failed.error == "Unknown model 'nope'. Choose one of: tiny, tiny-xl."
    assert isinstance(final[-1], JobDone) and worker.state == "idle"


@pytest.mark.parametrize("restart", [False, True], ids=["killed: a new actor", "crashed: Ray restarts it"])
async def test_an_actor_lost_mid_batch_puts_its_jobs_back_and_they_finish_once_elsewhere(
    cluster: Cluster, restart: bool
) -> None:
    for worker in cluster.workers:
        worker.start()
    with cluster.bus.subscribe() as events:
        tickets = [await cluster.queue.submit(txt2img(f"job {n}", steps=150, seed=n), member(n % 4)) for n in range(8)]
        ids = {ticket.job.id for ticket in tickets}
        seen: list[JobEvent] = []
        async with asyncio.timeout(60):
            while not any(isinstance(e, JobProgress) for e in seen):
                seen.append(await events.get())
        running = next(e.job_id for e in seen if isinstance(e, JobProgress))
        victim = next(w for w in cluster.workers if running in {job.job_id for job in w._running})
        lost = {job.job_id for job in victim._running}
        engine = victim.engine
        assert isinstance(engine, RemoteEngine)
        ray.kill(engine.actor, no_restart=not restart)
        seen += await collect_until_final(events, ids)

    assert Counter(e.job_id for e in seen if isinstance(e, JobDone)) == Counter(ids)  # each delivered once
    assert not [e for e in seen if isinstance(e, JobFailed)]
    for job_id in ids:
        job = await cluster.store.get_job(job_id)
        assert job.status is JobStatus.DONE and len(await cluster.store.images_for_job(job_id)) == 1
        assert job.attempts == (2 if job_id in lost else 1), (job_id, lost)

    # The lost worker comes back (Ray's restart, or a new actor) and takes work again on its own.
    await until(lambda: not victim.lost, timeout=120)
    survivor = next(w for w in cluster.workers if w is not victim)
    await survivor.stop(timeout=10)
    with cluster.bus.subscribe() as events:
        ticket = await cluster.queue.submit(txt2img("after the loss"), member(5))
        final = await collect_until_final(events, {ticket.job.id})
    assert isinstance(final[-1], JobDone)
