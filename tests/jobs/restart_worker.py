"""A process that runs store, queue and worker on a database, for the crash-recovery test.

python -m tests.jobs.restart_worker DB IMAGES MODEL [--submit N]
Re-queues interrupted work, delivers results that were never delivered, optionally submits N jobs
from five users, then runs until nothing is queued or running. Prints `DELIVERED <id>` per delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from generation.engine import Engine
from generation.request import GenerationRequest
from generation.specs import ModelSpec
from jobs.events import EventBus, JobDone, JobFailed
from jobs.limits import Limits
from jobs.queue import JobQueue, Requester
from jobs.worker import Worker
from storage.store import Store


async def main(db: Path, images: Path, model: Path, submit: int) -> None:
    engine = Engine({"tiny": ModelSpec(name="tiny", source=str(model))}, device="cpu")
    async with await Store.open(db, images) as store:
        bus = EventBus()
        queue = JobQueue(store, bus, Limits.unlimited())
        await queue.restore(max_attempts=3)
        for job in await store.undelivered_jobs():
            if await store.mark_delivered(job.id, "restart"):
                print(f"DELIVERED {job.id}", flush=True)
        for i in range(submit):
            request = GenerationRequest(
                prompt=f"job {i}", model="tiny", width=64, height=64, steps=25, guidance=7.0, seed=i, count=1 + i % 2
            )
            await queue.submit(request, Requester(user_id=i % 5, guild_id=1 + i % 2))
        print("SUBMITTED", flush=True)
        worker = Worker(engine, queue, max_batch=4)
        with bus.subscribe() as events:
            worker.start()
            while len(queue) or any(j.status.value == "running" for j in await store.recent_jobs(limit=1000)):
                event = await events.get()
                if isinstance(event, JobDone | JobFailed) and await store.mark_delivered(event.job_id, "event"):
                    print(f"DELIVERED {event.job_id}", flush=True)
        await worker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db", type=Path)
    parser.add_argument("images", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--submit", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.db, args.images, args.model, args.submit))
