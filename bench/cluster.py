"""GPU workers as Ray actors (`[cluster] backend = "ray"`) on this machine's CPUs, side by side in one run.

1. Throughput: the same burst of jobs (several users, batches of up to 4) through the real queue, workers and store,
   with 1 and with 2 local Ray actors (one CPU and one torch thread each); images/s and the ratio 2/1 (below 2 on
   a 2-core machine, whose cores the bot's process and Ray's own share with the actors; GPUs would not).
2. Overhead: one job alone (about 1 s of sampling) from submit to stored, through the local engine in this process
   (one torch thread, as an actor has) and through one Ray actor; the Ray path's extra time (target: <= 5%).
Rounds are interleaved and medians of at least 3 are printed.

Run: .venv/bin/python bench/cluster.py [--rounds 3] [--jobs 16] [--size 256] [--steps 10] [--single-size 448]
     [--single-steps 20] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from generation.engine import Engine
from generation.request import GenerationRequest
from generation.specs import ModelSpec
from generation.tiny import write_tiny_model
from jobs.cluster import RemoteEngine, connect, disconnect
from jobs.cluster_actor import ActorSettings
from jobs.events import EventBus, JobDone, JobFailed
from jobs.limits import Limits
from jobs.queue import JobQueue, Requester
from jobs.worker import Worker
from storage.store import Store

USERS = 4


def request(n: int, size: int, steps: int) -> GenerationRequest:
    return GenerationRequest(f"a lighthouse at dusk, take {n}", "tiny", size, size, steps, 7.0, seed=n)


async def run_jobs(engines: Sequence[Engine | RemoteEngine], store: Store, requests: list[GenerationRequest]) -> float:
    """Seconds from the first submit until every job's images are stored, through a fresh queue and workers."""
    bus = EventBus()
    queue = JobQueue(store, bus, Limits.unlimited(), trainings=False)
    workers = [Worker(engine, queue, max_batch=4, name=f"gpu-{n}") for n, engine in enumerate(engines, 1)]
    for worker in workers:
        worker.start()
    try:
        with bus.subscribe() as events:
            started = time.perf_counter()
            tickets = [await queue.submit(r, Requester(user_id=n % USERS, guild_id=1)) for n, r in enumerate(requests)]
            waiting = {ticket.job.id for ticket in tickets}
            while waiting:
                event = await events.get()
                if isinstance(event, JobFailed):
                    raise RuntimeError(f"job {event.job_id} failed: {event.error}")
                if isinstance(event, JobDone):
                    waiting.discard(event.job_id)
            return time.perf_counter() - started
    finally:
        await asyncio.gather(*(worker.stop(timeout=30) for worker in workers))


async def bench(args: argparse.Namespace, model_dir: Path, data: Path) -> None:
    models = {"tiny": ModelSpec(name="tiny", source=str(model_dir), steps=args.steps)}
    settings = ActorSettings(models, device="cpu", preview_every=5)
    actors = [RemoteEngine(settings, name=f"gpu-{n}", num_gpus=0, num_cpus=1) for n in (1, 2)]
    torch.set_num_threads(1)  # the local path gets what one actor gets: one torch thread
    local = Engine(models, device="cpu", preview_every=5)
    burst = [request(n, args.size, args.steps) for n in range(args.jobs)]
    lone = [request(10_000, args.single_size, args.single_steps)]
    try:
        async with await Store.open(data / "bench.sqlite3", data / "images") as store:
            # Warm-up: actors started, model loaded everywhere, one call each.
            await asyncio.gather(*(asyncio.to_thread(actor.load, "tiny") for actor in actors))
            local.load("tiny")
            await run_jobs(actors, store, burst[:2])
            await run_jobs([local], store, lone)
            one, two, local_s, ray_s = [], [], [], []
            for _ in range(args.rounds):
                one.append(await run_jobs(actors[:1], store, burst))
                two.append(await run_jobs(actors, store, burst))
            for _ in range(max(args.rounds, 7)):
                local_s.append(await run_jobs([local], store, lone))
                ray_s.append(await run_jobs(actors[:1], store, lone))
    finally:
        for actor in actors:
            actor.close()

    images = len(burst)
    rate1, rate2 = images / statistics.median(one), images / statistics.median(two)
    print(
        f"Ray GPU workers on CPU: tiny SD, {args.jobs} jobs from {USERS} users at {args.size}x{args.size}, "
        f"{args.steps} steps, batches of up to 4; one CPU and one torch thread per actor; {os.cpu_count()} cores; "
        f"medians of {args.rounds}"
    )
    print(f"{'workers':>8} {'images/s':>9} {'seconds':>8}")
    print(f"{1:>8} {rate1:>9.2f} {statistics.median(one):>8.2f}")
    print(f"{2:>8} {rate2:>9.2f} {statistics.median(two):>8.2f}")
    print(f"ratio 2 workers / 1 worker: {rate2 / rate1:.2f}x")
    local_median, ray_median = statistics.median(local_s), statistics.median(ray_s)
    print(
        f"One job alone ({args.single_size}x{args.single_size}, {args.single_steps} steps), submit to stored, "
        f"medians of {len(local_s)}: local path {local_median:.3f} s, Ray path {ray_median:.3f} s, "
        f"overhead {100 * (ray_median / local_median - 1):+.1f}% (target <= 5%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--single-size", type=int, default=448)
    parser.add_argument("--single-steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny numbers, for the smoke test")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.jobs, args.size, args.steps, args.single_size, args.single_steps = 3, 4, 64, 2, 64, 2
    started = connect("", num_cpus=4, num_gpus=0)
    try:
        with tempfile.TemporaryDirectory() as folder:
            model_dir = write_tiny_model(Path(folder) / "tiny-sd", "sd")
            asyncio.run(bench(args, model_dir, Path(folder)))
    finally:
        if started:
            disconnect()


if __name__ == "__main__":
    main()
