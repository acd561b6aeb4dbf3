"""Several workers waiting on one JobQueue: who gets a batch (model affinity across workers, per-worker model lists),
and fairness that holds whichever worker takes each batch. No GPU work: the workers here are waiting calls."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.events import EventBus
from jobs.fair_queue import QueuedJob
from jobs.limits import Limits
from jobs.queue import TRAINING_NEEDS_LOCAL, JobQueue, Requester
from storage.records import JobStatus
from storage.store import Store
from tests.support.requests import txt2img


@pytest.fixture
async def queue(tmp_path) -> AsyncIterator[JobQueue]:
    async with await Store.open(tmp_path / "db.sqlite3", tmp_path / "images") as store:
        yield JobQueue(store, EventBus(), Limits(max_queued_per_user=50))


def member(n: int) -> Requester:
    return Requester(user_id=n, guild_id=n, channel_id=10)


def waiting(queue: JobQueue, resident: str | None, **options) -> asyncio.Task[list[QueuedJob]]:
    """A worker holding `resident`, waiting for its next batch."""
    return asyncio.create_task(queue.next_batch(4, resident, **options))


_ids = itertools.count(10**6)  # apart from the ids the store gives


def job(user: int, model: str, cost: float) -> QueuedJob:
    return QueuedJob(next(_ids), user, None, cost, (model,), 1, 1.0, model)


async def settle() -> None:
    for _ in range(3):  # the waiters register, the queue hands out what it can
        await asyncio.sleep(0)


def models_of(task: asyncio.Task[list[QueuedJob]]) -> list[str | None]:
    return [job.model for job in task.result()]


async def test_a_job_goes_to_the_waiting_worker_that_holds_its_model(queue: JobQueue) -> None:
    first_in_line, holder = waiting(queue, "tiny"), waiting(queue, "tiny-xl")
    await settle()
    await queue.submit(txt2img(model="tiny-xl"), member(1))
    await settle()
    assert holder.done() and models_of(holder) == ["tiny-xl"] and not first_in_line.done()
    await queue.submit(txt2img(model="tiny"), member(2))
    await settle()
    assert models_of(first_in_line) == ["tiny"]


async def test_a_model_nobody_holds_goes_to_a_worker_holding_none_then_to_the_least_needed_model(
    queue: JobQueue,
) -> None:
    busy_model, empty = waiting(queue, "tiny"), waiting(queue, None)
    await settle()
    await queue.submit(txt2img(model="other"), member(1))
    await settle()
    assert models_of(empty) == ["other"] and not busy_model.done()
    busy_model.cancel()

    # Both hold a model; "a" is what the other queued jobs need, so the worker holding "b" switches. The jobs
    # arrive together while both wait ("a" behind "new" in one user's line: outside the window of 0).
    keeps, switches = waiting(queue, "a"), waiting(queue, "b")
    await settle()
    queue.requeue([job(2, "new", 1.0), job(2, "a", 1.0), job(2, "a", 1.0)])
    await settle()
    assert models_of(switches) == ["new"] and models_of(keeps) == ["a", "a"]


async def test_a_worker_with_a_model_list_takes_only_those_models(queue: JobQueue) -> None:
    await queue.submit(txt2img(model="tiny-xl"), member(1))  # the fair pick, but not for this worker
    await queue.submit(txt2img(model="tiny"), member(2))
    small = waiting(queue, "tiny", serves=frozenset({"tiny"}))
    await settle()
    assert models_of(small) == ["tiny"] and len(queue) == 1
    only_small = waiting(queue, "tiny", serves=frozenset({"tiny"}))
    await settle()
    assert not only_small.done()  # the SDXL job waits for a worker that runs it
    anything = waiting(queue, None)
    await settle()
    assert models_of(anything) == ["tiny-xl"] and not only_small.done()
    only_small.cancel()


async def test_a_batch_handed_to_a_worker_that_stops_that_moment_goes_back(queue: JobQueue) -> None:
    stopping = waiting(queue, "tiny")
    await settle()
    ticket = await queue.submit(txt2img(), member(1))
    await asyncio.sleep(0)  # the queue hands the batch over; the worker has not run since
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert queue.position(ticket.job.id) == 1
    (job,) = await queue.next_batch(4, "tiny")
    assert job.job_id == ticket.job.id


async def test_training_is_refused_where_the_workers_cannot_train(queue: JobQueue) -> None:
    cluster = JobQueue(queue.store, EventBus(), Limits(), trainings=False)
    with pytest.raises(Exception, match="LoRA training is not available on this bot") as refused:
        cluster.check_trainings()
    assert str(refused.value) == TRAINING_NEEDS_LOCAL and 'backend = "local"' in TRAINING_NEEDS_LOCAL
    queue.check_trainings()  # the local GPU trains


@settings(max_examples=40, deadline=None)
@given(
    models=st.lists(st.sampled_from("abc"), min_size=2, max_size=6),
    costs=st.lists(st.integers(1, 20), min_size=2, max_size=6),
    workers=st.integers(1, 4),
    window=st.integers(0, 40),
    seed=st.integers(0, 1000),
)
def test_fairness_bound_holds_whichever_worker_takes_each_batch(models, costs, workers, window, seed) -> None:
    """Backlogged users, each on their own model, served by several workers finishing in any order: the service
    gap between any two users stays within the one-worker bound with affinity (c_f + c_g + window + a job)."""
    users = list(range(min(len(models), len(costs))))
    rng = random.Random(seed)

    async def scenario() -> dict[int, float]:
        queue = JobQueue(None, EventBus(), Limits())  # type: ignore[arg-type]  # pushes and pops: no store needed
        pops = 40
        queue.requeue([job(user, models[user], costs[user]) for _ in range(pops + 1) for user in users])
        served = dict.fromkeys(users, 0.0)
        residents: list[str | None] = [None] * workers
        waits = {n: waiting_for(queue, residents[n], window) for n in range(workers)}
        for _ in range(pops):
            await settle()
            ready = [n for n, task in waits.items() if task.done()]
            n = rng.choice(ready)  # any worker that has a batch may finish first
            (taken,) = waits[n].result()
            served[taken.user_id] += taken.cost
            residents[n] = taken.model
            waits[n] = waiting_for(queue, residents[n], window)
        for task in waits.values():
            task.cancel()
        return served

    served = asyncio.run(scenario())
    biggest = max(costs[u] for u in users)
    for f, g in itertools.combinations(users, 2):
        # each worker may hold one taken-but-uncounted job: that many more jobs of slack
        assert abs(served[f] - served[g]) <= costs[f] + costs[g] + window + biggest * (workers + 1) + 1e-9


def waiting_for(queue: JobQueue, resident: str | None, window: float) -> asyncio.Task[list[QueuedJob]]:
    return asyncio.create_task(queue.next_batch(1, resident, window))


async def test_a_job_whose_worker_is_lost_each_time_is_given_up_after_max_attempts(queue: JobQueue) -> None:
    store = queue.store
    ticket = await queue.submit(txt2img(), member(1))
    for attempt in (1, 2):
        assert await store.mark_running([ticket.job.id]) == [ticket.job.id]
        assert await store.requeue_lost([ticket.job.id], max_attempts=3) == ([ticket.job.id], [])
        job = await store.get_job(ticket.job.id)
        assert job.status is JobStatus.QUEUED and job.attempts == attempt  # back in the queue, the attempt counted
    await store.mark_running([ticket.job.id])
    requeued, (failed,) = await store.requeue_lost([ticket.job.id], max_attempts=3)
    assert requeued == [] and failed.id == ticket.job.id and failed.status is JobStatus.FAILED
    assert failed.error == "Generation was interrupted 3 times; giving up."
    await store.cancel_job(ticket.job.id)
    assert await store.requeue_lost([ticket.job.id], max_attempts=3) == ([], [])  # finished jobs stay as they are
