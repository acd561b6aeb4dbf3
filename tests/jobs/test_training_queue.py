"""LoRA trainings in the fair queue: chunks on the GPU thread with other members' jobs served between them,
checkpoints that survive a stop, cancel, and the LoRA usable by /imagine jobs when it is done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from generation.catalog import Catalog, trained_name
from generation.engine import Engine
from generation.specs import ModelSpec
from generation.training_inputs import TrainingSettings
from jobs.events import (
    Event,
    EventBus,
    JobDone,
    JobStarted,
    TrainingCancelled,
    TrainingDone,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)
from jobs.limits import Limits
from jobs.queue import JobQueue, Requester
from jobs.worker import Worker
from storage.records import JobStatus, TrainingRecord
from storage.store import Store
from tests.support.requests import txt2img
from tests.support.threads import one_torch_thread

SETTINGS = TrainingSettings(
    token="sks", class_word="ball", steps=8, rank=4, learning_rate=5e-2, resolution=64, seed=0, batch_size=2
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models on one thread (tests/support/threads.py says why)."""
    with one_torch_thread():
        yield


class Timeline(EventBus):
    """A bus that also keeps every event in the order it was published (all on the event loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Event | tuple[str, int]] = []

    def publish(self, event: Event) -> None:
        self.seen.append(event)
        super().publish(event)


@dataclass
class Rig:
    store: Store
    bus: Timeline
    catalog: Catalog
    queue: JobQueue
    worker: Worker


def photos(count: int = 4) -> list[Image.Image]:
    """Discs of one colour, the subject to learn."""
    result = []
    for i in range(count):
        photo = Image.new("RGB", (64, 64), (255, 255, 255))
        ImageDraw.Draw(photo).ellipse((8 + 4 * i, 8, 48 + 4 * i, 48), fill=(200, 40, 40))
        result.append(photo)
    return result


async def open_rig(tmp_path: Path, tiny_sd_dir: Path, chunk: int = 2) -> Rig:
    spec = ModelSpec(name="tiny", source=str(tiny_sd_dir), steps=4, width=64, height=64)
    catalog = Catalog([spec], "tiny")
    engine = Engine({"tiny": spec}, device="cpu", preview_every=0, loras=catalog.all_loras)
    store = await Store.open(tmp_path / "db.sqlite3", tmp_path / "images")
    bus = Timeline()
    queue = JobQueue(store, bus, Limits(max_queued_per_user=50), catalog=catalog, training_chunk=chunk)
    return Rig(store, bus, catalog, queue, Worker(engine, queue, max_batch=4))


@pytest.fixture
async def rig(tmp_path: Path, tiny_sd_dir: Path) -> AsyncIterator[Rig]:
    opened = await open_rig(tmp_path, tiny_sd_dir)
    yield opened
    await opened.worker.stop(timeout=5)
    await opened.store.close()


async def new_training(
    store: Store, user_id: int = 1, guild_id: int = 1, name: str = "Red ball", **origin
) -> TrainingRecord:
    return await store.create_training(
        user_id=user_id,
        guild_id=guild_id,
        name=name,
        trigger_token=SETTINGS.token,
        class_word=SETTINGS.class_word,
        base_model="tiny",
        kind="sd",
        settings=asdict(SETTINGS),
        total_steps=SETTINGS.steps,
        photos=photos(),
        origin={"kind": "interaction", **origin},
    )


async def wait_for(bus: EventBus, kind: type, training_id: int, timeout: float = 120) -> Event:
    with bus.subscribe() as events:
        async with asyncio.timeout(timeout):
            while True:
                event = await events.get()
                if isinstance(event, kind) and getattr(event, "training_id", None) == training_id:
                    return event


def pixels(job_images) -> np.ndarray:
    return np.asarray(Image.open(job_images[0]).convert("RGB"), dtype=np.int16)


async def run_job(rig: Rig, request, user_id: int = 9) -> np.ndarray:
    with rig.bus.subscribe() as events:
        ticket = await rig.queue.submit(request, Requester(user_id=user_id, guild_id=1))
        async with asyncio.timeout(120):
            async for event in events:
                if isinstance(event, JobDone) and event.job_id == ticket.job.id:
                    return pixels([rig.store.image_path(event.images[0])])


async def test_a_training_runs_in_chunks_and_its_lora_changes_the_pictures(rig: Rig) -> None:
    training = await new_training(rig.store)
    assert rig.queue.push_training(training) == 1
    rig.worker.start()
    done = await wait_for(rig.bus, TrainingDone, training.id)
    assert isinstance(done, TrainingDone)

    starts = [e for e in rig.bus.seen if isinstance(e, TrainingStarted)]
    assert [(e.step, e.total) for e in starts] == [(0, 8), (2, 8), (4, 8), (6, 8)]  # four chunks of two steps
    steps = [e for e in rig.bus.seen if isinstance(e, TrainingProgress)]
    assert [e.step for e in steps] == list(range(1, 9)) and all(e.loss > 0 for e in steps)

    stored = await rig.store.get_training(training.id)
    assert stored is not None and stored.status is JobStatus.DONE and stored.steps_done == 8
    assert stored.attempts == 1  # one start for the whole training, not one per chunk
    assert not rig.store.checkpoint_file(training.id).exists()
    assert len(stored.samples) == 2
    for sample in stored.samples:
        with Image.open(rig.store.sample_file(sample)) as image:
            assert image.size == (64, 64) and "sks" in image.info["parameters"]

    name = trained_name(done.lora.name, done.lora.id)
    assert name in rig.catalog.trained
    base = await run_job(rig, txt2img("a photo of sks ball"))
    with_lora = await run_job(rig, txt2img(f"a photo of sks ball <lora:{name}:1>", loras=((name, 1.0),)))
    at_zero = await run_job(rig, txt2img(f"a photo of sks ball <lora:{name}:0>", loras=((name, 0.0),)))
    assert np.abs(with_lora - base).max() > 0
    assert np.array_equal(at_zero, base)


async def test_jobs_asked_for_during_a_training_run_before_its_next_chunk(rig: Rig) -> None:
    training = await new_training(rig.store)
    rig.queue.push_training(training)
    rig.worker.start()
    await wait_for(rig.bus, TrainingStarted, training.id)
    jobs = []
    for user in (2, 3, 4):  # different step counts: three batches, not one
        ticket = await rig.queue.submit(txt2img(steps=2 + user), Requester(user_id=user, guild_id=1))
        rig.bus.seen.append(("submitted", ticket.job.id))
        jobs.append(ticket.job.id)
    await wait_for(rig.bus, TrainingDone, training.id)

    for job_id in jobs:
        seen = rig.bus.seen
        submitted = seen.index(("submitted", job_id))
        started = next(i for i, e in enumerate(seen) if isinstance(e, JobStarted) and e.job_id == job_id)
        chunks_between = [e for e in seen[submitted:started] if isinstance(e, TrainingStarted)]
        # It waited at most for the chunk running when it came (and the batches of others who came with it).
        assert chunks_between == [], f"job {job_id} waited behind {len(chunks_between)} more chunk(s)"
    last_job = max(i for i, e in enumerate(rig.bus.seen) if isinstance(e, JobStarted))
    assert any(isinstance(e, TrainingStarted) for e in rig.bus.seen[last_job:])  # the training went on after


async def test_cancel_stops_a_training_and_makes_no_lora(rig: Rig) -> None:
    training = await new_training(rig.store)
    rig.queue.push_training(training)
    rig.worker.start()
    await wait_for(rig.bus, TrainingProgress, training.id)
    assert await rig.queue.cancel_training(training.id)
    assert not await rig.queue.cancel_training(training.id)
    assert any(isinstance(e, TrainingCancelled) for e in rig.bus.seen)
    await asyncio.sleep(0)  # let the worker see it; nothing else may be queued for this training
    async with asyncio.timeout(30):
        while rig.worker._running:
            await asyncio.sleep(0.01)
    stored = await rig.store.get_training(training.id)
    assert stored is not None and stored.status is JobStatus.CANCELLED and stored.lora_id is None
    assert len(rig.queue) == 0 and await rig.store.live_loras() == []


async def test_a_stopped_bot_resumes_the_training_from_its_checkpoint(tmp_path: Path, tiny_sd_dir: Path) -> None:
    first = await open_rig(tmp_path, tiny_sd_dir)
    training = await new_training(first.store)
    first.queue.push_training(training)
    first.worker.start()
    progress = await wait_for(first.bus, TrainingStarted, training.id)
    while not (isinstance(progress, TrainingStarted) and progress.step >= 4):
        progress = await wait_for(first.bus, TrainingStarted, training.id)
    await first.worker.stop(timeout=5)
    await first.store.close()

    second = await open_rig(tmp_path, tiny_sd_dir)
    try:
        stopped = await second.store.get_training(training.id)
        assert stopped is not None and stopped.status is JobStatus.QUEUED and stopped.attempts == 0
        await second.queue.restore(max_attempts=3)
        second.worker.start()
        await wait_for(second.bus, TrainingDone, training.id)
        starts = [e.step for e in second.bus.seen if isinstance(e, TrainingStarted)]
        assert starts[0] >= 4 and starts[-1] == 6  # went on from the checkpoint, not from step 0
        assert len(await second.store.live_loras()) == 1
    finally:
        await second.worker.stop(timeout=5)
        await second.store.close()


async def test_prior_preservation_makes_class_images_once_before_the_first_step(rig: Rig) -> None:
    training = await new_training(rig.store, class_images=2)
    rig.queue.push_training(training)
    rig.worker.start()
    await wait_for(rig.bus, TrainingDone, training.id)
    stored = await rig.store.get_training(training.id)
    assert stored is not None and stored.status is JobStatus.DONE and len(stored.class_photos) == 2
    _, class_photos = await rig.store.load_training_photos(stored)
    assert [image.size for image in class_photos] == [(64, 64), (64, 64)]
    # Stored once: a later call (a resume) must not replace the images the checkpoint trained with.
    assert await rig.store.set_training_class_photos(training.id, photos(1)) == stored


async def test_a_training_the_gpu_has_no_memory_for_fails_with_a_clear_message(rig: Rig) -> None:
    def full_gpu(module, args) -> None:
        if torch.is_grad_enabled():  # training steps only: the samples and other jobs still run
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    hook = rig.worker.engine.training_pipeline("tiny").unet.register_forward_pre_hook(full_gpu)
    try:
        training = await new_training(rig.store)
        rig.queue.push_training(training)
        rig.worker.start()
        failed = await wait_for(rig.bus, TrainingFailed, training.id)
    finally:
        hook.remove()
    assert isinstance(failed, TrainingFailed) and "ran out of memory training at 64x64" in failed.error
    stored = await rig.store.get_training(training.id)
    assert stored is not None and stored.status is JobStatus.FAILED and stored.error == failed.error
    assert len(rig.queue) == 0
    assert (await run_job(rig, txt2img())).shape == (64, 64, 3)  # the GPU loop goes on
