"""A full disk loses nothing: the job waits in the queue, the worker checks for room with back-off, then the
job finishes, once. The tiny model and a real SQLite file; the disk is full where image bytes are written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from generation.engine import Engine
from jobs.events import Event, EventBus, JobCancelled, JobDone, JobStarted, StorageFull
from jobs.limits import Limits
from jobs.metrics import JobMetrics
from jobs.queue import JobQueue, Requester
from jobs.worker import SPACE_BACKOFF, STORAGE_FULL, Worker
from storage.records import JobStatus
from storage.store import Store
from tests.support.full_disk import full_disk
from tests.support.requests import txt2img


class Pauses:
    """The worker's sleep between checks for room: records each pause and waits for none of them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


@dataclass
class Rig:
    store: Store
    bus: EventBus
    queue: JobQueue
    worker: Worker
    pauses: Pauses
    images: Path


@pytest.fixture
async def open_rig(engine: Engine, tmp_path: Path) -> AsyncIterator[Callable]:
    """`await open_rig()`: store, queue (restored) and an unstarted worker on tmp_path; again: a restart."""
    opened: list[Rig] = []

    async def open_one() -> Rig:
        store = await Store.open(tmp_path / "db.sqlite3", tmp_path / "images")
        bus = EventBus()
        queue = JobQueue(store, bus, Limits(max_steps=150, max_queued_per_user=50))
        await queue.restore(max_attempts=3)
        pauses = Pauses()
        rig = Rig(store, bus, queue, Worker(engine, queue, max_batch=4, sleep=pauses), pauses, tmp_path / "images")
        opened.append(rig)
        return rig

    yield open_one
    for rig in opened:
        await rig.worker.stop(timeout=5)
        await rig.store.close()


class Recorder:
    """Every event of the bus, in order, from the moment it is made."""

    def __init__(self, bus: EventBus) -> None:
        self.seen: list[Event] = []
        self._subscription = bus.subscribe()
        self._task = asyncio.create_task(self._record())

    async def _record(self) -> None:
        while True:
            self.seen.append(await self._subscription.get())

    def of(self, kind: type) -> list:
        return [event for event in self.seen if isinstance(event, kind)]

    async def wait(self, kind: type, count: int = 1, timeout: float = 60) -> list:
        """The first `count` events of a kind, once there are that many."""
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                await asyncio.sleep(0.01)
        return self.of(kind)[:count]

    async def __aenter__(self) -> Recorder:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._task.cancel()
        self._subscription.close()


async def wait_checks(rig: Rig, count: int) -> None:
    """Until the worker has paused `count` times to check for room."""
    async with asyncio.timeout(30):
        while len(rig.pauses.delays) < count:
            await asyncio.sleep(0.01)


def gauges(rig: Rig) -> dict[tuple[str, tuple[str, ...]], float]:
    """The metrics' samples now, by name and label values."""
    metrics = JobMetrics(rig.store, rig.queue, [rig.worker])
    return {(s.name, tuple(s.labels.values())): s.value for family in metrics.collect() for s in family.samples}


def stored_files(images: Path) -> set[str]:
    return {p.relative_to(images).as_posix() for p in (images / "jobs").rglob("*.png")} if images.exists() else set()


async def test_a_job_that_cannot_be_stored_waits_queued_then_finishes_once(open_rig, monkeypatch) -> None:
    rig = await open_rig()
    with full_disk(monkeypatch) as disk:
        async with Recorder(rig.bus) as events:
            ticket = await rig.queue.submit(txt2img("kept for later", seed=5), Requester(user_id=1))
            rig.worker.start()
            assert [e.job_id for e in await events.wait(StorageFull)] == [ticket.job.id]
            await wait_checks(rig, 3)
            job = await rig.store.get_job(ticket.job.id)
            assert (job.status, job.attempts, job.error) == (JobStatus.QUEUED, 0, None)  # kept, not failed
            assert rig.worker.state == STORAGE_FULL
            assert gauges(rig)[("imagine_storage_full", ())] == 1
            assert gauges(rig)[("imagine_worker_state", (rig.worker.name, STORAGE_FULL))] == 1
            assert not stored_files(rig.images)
            assert len(events.of(JobStarted)) == 1  # no new batch while there is no room
            disk.free()
            (done,) = await events.wait(JobDone)
    assert done.job_id == ticket.job.id
    job = await rig.store.get_job(ticket.job.id)
    assert (job.status, job.attempts) == (JobStatus.DONE, 1)  # the run that could not be stored did not count
    records = await rig.store.images_for_job(job.id)
    assert len(records) == 1 and stored_files(rig.images) == {r.path for r in records}
    assert len(events.of(JobDone)) == 1 and len(events.of(StorageFull)) == 1
    assert rig.worker.state == "idle"
    assert gauges(rig)[("imagine_storage_full", ())] == 0


async def test_checks_for_room_back_off_as_scheduled(open_rig, monkeypatch) -> None:
    rig = await open_rig()
    with full_disk(monkeypatch) as disk:
        async with Recorder(rig.bus) as events:
            ticket = await rig.queue.submit(txt2img("patient", seed=6), Requester(user_id=1))
            rig.worker.start()
            await wait_checks(rig, len(SPACE_BACKOFF) + 2)
            disk.free()
            await events.wait(JobDone)
    assert rig.pauses.delays[: len(SPACE_BACKOFF) + 2] == [*SPACE_BACKOFF, SPACE_BACKOFF[-1], SPACE_BACKOFF[-1]]
    # The result's own write, then one room check (one more refused write) after each pause while full.
    assert len(disk.refused) >= 1 + len(SPACE_BACKOFF) + 1
    assert (await rig.store.get_job(ticket.job.id)).status is JobStatus.DONE


async def test_every_job_of_the_batch_is_kept_and_each_is_stored_once(open_rig, monkeypatch) -> None:
    rig = await open_rig()
    with full_disk(monkeypatch) as disk:
        async with Recorder(rig.bus) as events:
            tickets = [await rig.queue.submit(txt2img(f"batch {i}", seed=i), Requester(user_id=i)) for i in range(3)]
            rig.worker.start()
            kept = {e.job_id for e in await events.wait(StorageFull, 3)}
            assert kept == {t.job.id for t in tickets}
            assert [e.batch_images for e in events.of(JobStarted)] == [3, 3, 3]  # one batch
            await wait_checks(rig, 2)
            assert [(await rig.store.get_job(t.job.id)).status for t in tickets] == [JobStatus.QUEUED] * 3
            disk.free()
            done = {e.job_id for e in await events.wait(JobDone, 3)}
    assert done == kept and len(events.of(JobDone)) == 3
    jobs = [await rig.store.get_job(t.job.id) for t in tickets]
    assert [(j.status, j.attempts) for j in jobs] == [(JobStatus.DONE, 1)] * 3
    rows = {r.path for t in tickets for r in await rig.store.images_for_job(t.job.id)}
    assert len(rows) == 3 and stored_files(rig.images) == rows  # no orphan file, none missing


async def test_a_kept_job_cancelled_while_the_disk_is_full_never_runs_again(open_rig, monkeypatch) -> None:
    rig = await open_rig()
    with full_disk(monkeypatch) as disk:
        async with Recorder(rig.bus) as events:
            first = await rig.queue.submit(txt2img("cancel me", seed=1), Requester(user_id=1))
            rig.worker.start()
            await events.wait(StorageFull)
            assert await rig.queue.cancel(first.job.id)
            second = await rig.queue.submit(txt2img("after it", seed=2), Requester(user_id=2))
            disk.free()
            (done,) = await events.wait(JobDone)
    assert done.job_id == second.job.id
    assert [e.job_id for e in events.of(JobCancelled)] == [first.job.id]
    assert (await rig.store.get_job(first.job.id)).status is JobStatus.CANCELLED
    assert await rig.store.images_for_job(first.job.id) == []
    assert [e.job_id for e in events.of(JobStarted)] == [first.job.id, second.job.id]  # the first ran once


async def test_stopped_while_the_disk_is_full_the_job_is_queued_for_the_next_start(open_rig, monkeypatch) -> None:
    rig = await open_rig()
    with full_disk(monkeypatch):
        async with Recorder(rig.bus) as events:
            ticket = await rig.queue.submit(txt2img("survives a restart", seed=3), Requester(user_id=1))
            rig.worker.start()
            await events.wait(StorageFull)
            await wait_checks(rig, 1)
            async with asyncio.timeout(10):
                await rig.worker.stop()  # does not wait for room
        assert rig.worker.state == "stopped"
        job = await rig.store.get_job(ticket.job.id)
        assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)
    again = await open_rig()  # the next start, with room again
    async with Recorder(again.bus) as events:
        again.worker.start()
        (done,) = await events.wait(JobDone)
    assert done.job_id == ticket.job.id
    job = await again.store.get_job(ticket.job.id)
    assert (job.status, job.attempts) == (JobStatus.DONE, 1)
