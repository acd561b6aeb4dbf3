"""How many jobs a second the one bot process's SQLite store can carry: the number behind the scale-out notes.

    python bench/store_throughput.py [--jobs 300] [--size 512] [--concurrency 8]

Each job goes through what the bot writes for it: create (queued, counted in today's usage), running, done with
one PNG of SIZE² written to disk and recorded, delivered. `concurrency` jobs are in flight at once on one event
loop, as submissions, workers and deliveries are in the bot. The PNG is encoded once up front: encoding runs on
the GPU worker's side, not the store's. Prints jobs/s and the median and p99 time of one job's writes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from generation.request import GenerationRequest
from generation.results import GeneratedImage
from storage.store import Store


async def _one_job(store: Store, user: int, image: GeneratedImage, size: int) -> float:
    started = time.perf_counter()
    request = GenerationRequest(
        prompt=f"a lighthouse {user}", model="tiny", width=size, height=size, steps=20, guidance=7.0, seed=user
    )
    job = await store.create_job(request, user_id=user, guild_id=1, channel_id=2, origin={"kind": "bench"})
    await store.mark_running([job.id])
    await store.finish_job(job.id, [image])
    await store.mark_delivered(job.id, "channel:1")
    return time.perf_counter() - started


async def measure(jobs: int, size: int, concurrency: int) -> tuple[float, list[float]]:
    """Jobs per second through the store, and each job's seconds of writes."""
    image = GeneratedImage(Image.new("RGB", (size, size), (90, 120, 200)), seed=1, index=0, parameters="a lighthouse")
    with tempfile.TemporaryDirectory() as folder:
        async with await Store.open(Path(folder) / "bot.sqlite3", Path(folder) / "images") as store:
            gate = asyncio.Semaphore(concurrency)

            async def bounded(user: int) -> float:
                async with gate:
                    return await _one_job(store, user, image, size)

            started = time.perf_counter()
            times = await asyncio.gather(*(bounded(n) for n in range(jobs)))
            return jobs / (time.perf_counter() - started), list(times)


def main() -> None:
    """Print the store's jobs/s on this machine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    rate, times = asyncio.run(measure(args.jobs, args.size, args.concurrency))
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"store: {rate:.0f} jobs/s ({args.jobs} jobs, one {args.size}² PNG each, {args.concurrency} in flight)")
    print(f"one job's writes: median {statistics.median(times) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")


if __name__ == "__main__":
    main()
