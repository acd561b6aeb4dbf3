"""LoRA switch versus reload, and Dreambooth-LoRA training speed, side by side in one run (CPU: tiny model).

    python bench/loras.py [--rounds 5] [--train-steps 20]

1. Two tiny LoRAs on the tiny SD model: switching between resident adapters (generation's AdapterCache,
   set_adapters) versus what a bot without a cache does, unloading and loading the weights each time.
2. Training: LoraTrainer steps/s and peak resident memory at 64 px, rank 8, batch 1, on 4 generated photos.
3. The longest /imagine wait during a training run: a training through the real queue, worker and store
   while 3 other members each ask for a picture whenever a chunk starts; in chunks of --chunk steps, and
   for comparison as one chunk (what a bot that trains outside the fair queue does).
Absolute figures on this 2-core box say little; the GPU run belongs to issue 14. Medians of --rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from PIL import Image, ImageDraw

from generation.catalog import Catalog
from generation.engine import Engine
from generation.families.adapters import AdapterCache
from generation.request import GenerationRequest
from generation.specs import LoraSpec, ModelSpec
from generation.tiny import build_tiny_sd
from generation.tiny.lora import write_tiny_lora
from generation.training import LoraTrainer
from generation.training_inputs import TrainingSettings
from jobs.events import Event, EventBus, JobStarted, TrainingDone, TrainingStarted
from jobs.limits import Limits
from jobs.queue import JobQueue, Requester
from jobs.worker import Worker
from storage.store import Store


def switching(folder: Path, rounds: int) -> tuple[float, float]:
    """Median seconds per change of LoRA: resident switch, then unload + load."""
    pipe = build_tiny_sd()
    a, b = (
        LoraSpec(name=n, source=str(write_tiny_lora(folder / f"{n}.safetensors", seed=s)), kind="sd")
        for n, s in (("a", 1), ("b", 2))
    )
    cache = AdapterCache(pipe)
    cache.use([(a, 1.0)])
    cache.use([(b, 1.0)])  # both resident now
    switch, reload = [], []
    for i in range(rounds):
        started = time.perf_counter()
        cache.use([((a, b)[i % 2], 1.0)])
        switch.append(time.perf_counter() - started)
    plain = build_tiny_sd()
    for i in range(rounds):
        spec = (a, b)[i % 2]
        started = time.perf_counter()
        plain.unload_lora_weights()
        plain.load_lora_weights(spec.source, adapter_name=spec.name)
        reload.append(time.perf_counter() - started)
    return statistics.median(switch), statistics.median(reload)


def photos() -> list[Image.Image]:
    """Four discs on white: the subject."""
    made = []
    for i in range(4):
        photo = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(photo).ellipse((8 + 4 * i, 8, 48 + 4 * i, 48), fill=(200, 40 * i, 60))
        made.append(photo)
    return made


def training(steps: int) -> tuple[float, float]:
    """Steps per second and peak RSS (MiB) of a short training run."""
    settings = TrainingSettings(token="sks", class_word="ball", steps=steps + 2, rank=8, resolution=64)
    trainer = LoraTrainer(build_tiny_sd(), photos(), settings)
    trainer.run_chunk(2)  # warm-up
    started = time.perf_counter()
    trainer.run_chunk(steps)
    seconds = time.perf_counter() - started
    return steps / seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clocked(EventBus):
    """A bus that notes when each event was published."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[float, Event]] = []

    def publish(self, event: Event) -> None:
        self.seen.append((time.perf_counter(), event))
        super().publish(event)


async def waits_during_training(folder: Path, model: Path, steps: int, chunk: int) -> tuple[float, float, float]:
    """Longest wait of a job asked for during the training, and the longest chunk and batch (seconds)."""
    spec = ModelSpec(name="tiny", source=str(model), steps=4, width=64, height=64)
    catalog = Catalog([spec], "tiny")
    engine = Engine({"tiny": spec}, device="cpu", preview_every=0, loras=catalog.all_loras)
    bus = Clocked()
    async with await Store.open(folder / "db.sqlite3", folder / "images") as store:
        queue = JobQueue(store, bus, Limits(max_queued_per_user=1000), catalog=catalog, training_chunk=chunk)
        worker = Worker(engine, queue, max_batch=1)
        settings = TrainingSettings(token="sks", class_word="ball", steps=steps, rank=4, resolution=64)
        training = await store.create_training(
            user_id=1, guild_id=1, name="bench", trigger_token="sks", class_word="ball", base_model="tiny",
            kind="sd", settings=settings.__dict__, total_steps=steps, photos=photos(), origin={"kind": "bench"},
        )  # fmt: skip
        queue.push_training(training)
        submitted: dict[int, float] = {}
        seed = 0
        with bus.subscribe() as events:
            worker.start()
            async for event in events:
                if isinstance(event, TrainingDone):
                    break
                if isinstance(event, TrainingStarted):
                    for user in (2, 3, 4):
                        seed += 1
                        request = GenerationRequest(
                            prompt="a cube", model="tiny", width=64, height=64, steps=4, guidance=7.0, seed=seed
                        )
                        ticket = await queue.submit(request, Requester(user_id=user, guild_id=1))
                        submitted[ticket.job.id] = time.perf_counter()
            while len([e for _, e in bus.seen if isinstance(e, JobStarted)]) < len(submitted):
                await asyncio.sleep(0.01)
        await worker.stop()
    starts = [(at, e) for at, e in bus.seen if isinstance(e, JobStarted | TrainingStarted)]
    longest: dict[type, float] = {JobStarted: 0.0, TrainingStarted: 0.0}
    for (at, event), (after, _) in itertools.pairwise(starts):
        longest[type(event)] = max(longest[type(event)], after - at)
    waits = [at - submitted[e.job_id] for at, e in starts if isinstance(e, JobStarted)]
    return max(waits), longest[TrainingStarted], longest[JobStarted]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--wait-steps", type=int, default=60, help="training steps in the wait measurement")
    parser.add_argument("--chunk", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="imagine-loras-") as temp:
        switch, reload = switching(Path(temp), args.rounds)
    print(
        f"LoRA change (tiny SD, median of {args.rounds}): resident switch {switch * 1000:.2f} ms, "
        f"unload + load {reload * 1000:.2f} ms ({reload / switch:.0f}x)"
    )
    rate, peak = training(args.train_steps)
    print(
        f"Training (tiny SD, 64 px, rank 8, batch 1, {args.train_steps} steps): {rate:.1f} steps/s, "
        f"peak RSS {peak:.0f} MiB"
    )
    with tempfile.TemporaryDirectory(prefix="imagine-train-wait-") as temp:
        model = Path(temp) / "tiny"
        build_tiny_sd().save_pretrained(model)
        for chunk in (args.chunk, args.wait_steps):
            folder = Path(temp) / f"chunk-{chunk}"
            wait, chunk_s, batch_s = asyncio.run(waits_during_training(folder, model, args.wait_steps, chunk))
            print(
                f"Longest /imagine wait during a {args.wait_steps}-step training in chunks of {chunk}: "
                f"{wait:.2f} s (longest chunk {chunk_s:.2f} s + longest batch {batch_s:.2f} s = "
                f"{chunk_s + batch_s:.2f} s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
