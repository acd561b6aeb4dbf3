"""Model loads with and without the worker's resident-model preference, on mixed-model traffic.

Discrete-event simulation over the real FairQueue and the real per-family costs (generation.catalog):
24 users in two servers send SD 1.5, SDXL, DeepFloyd IF and FLUX.1 jobs (Poisson arrivals, each user
mostly on one model); one GPU serves them, paying a model load whenever the batch's model is not resident.
Prints loads, images/s and waits with no preference and with windows up to the worker's default (the work
the GPU does during one load), in one run; waits also per model, so what the preference costs shows.

Run: .venv/bin/python bench/model_affinity.py [--jobs 600] [--load-seconds 20] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generation.catalog import Catalog
from generation.request import GenerationRequest
from generation.specs import KIND_DEFAULTS, ModelSpec
from jobs.fair_queue import FairQueue, QueuedJob
from jobs.worker import AFFINITY_WINDOW

MODELS = {"sd15": "sd", "sdxl": "sdxl", "if": "if", "flux": "flux"}
SD15_PIXEL_STEPS_PER_S = 512 * 512 * 20 * 8.0  # a GPU making 8 SD 1.5 images/s at 512², 20 steps
MAX_BATCH = 4


def catalog() -> Catalog:
    """One model of each kind, at its kind's defaults."""
    specs = []
    for name, kind in MODELS.items():
        d = KIND_DEFAULTS[kind]
        specs.append(ModelSpec(name, "random", kind, d.steps, d.guidance, d.width, d.height))
    return Catalog(specs)


def workload(models: Catalog, jobs: int, seed: int) -> list[tuple[float, QueuedJob]]:
    """(arrival second, job) sorted by arrival; offered load 60% of the GPU before model loads."""
    rng = random.Random(seed)
    users = [(user, 1 + user % 2, rng.choice(list(MODELS))) for user in range(24)]
    requests = []
    for job_id in range(1, jobs + 1):
        user, guild, favourite = rng.choice(users)
        model = favourite if rng.random() < 0.8 else rng.choice(list(MODELS))
        spec = models.spec(model)
        request = GenerationRequest("a photo", model, spec.width, spec.height, spec.steps, spec.guidance, job_id)
        queued = QueuedJob(job_id, user, guild, models.cost(request), models.batch_key(request), 1, 1.0, model)
        requests.append(queued)
    mean_cost = statistics.fmean(j.cost for j in requests)
    gap = mean_cost / SD15_PIXEL_STEPS_PER_S / 0.6
    clock, timed = 0.0, []
    for queued in requests:
        clock += rng.expovariate(1 / gap)
        timed.append((clock, queued))
    return timed


def simulate(timed: list[tuple[float, QueuedJob]], window: float | None, load_seconds: float) -> dict[str, float]:
    """Serve the workload on one simulated GPU; window None: no preference."""
    queue, clock, resident, loads = FairQueue(), 0.0, None, 0
    arrivals, waits, per_model = list(timed), [], defaultdict(list)
    arrived_at = {job.job_id: t for t, job in timed}
    while arrivals or queue:
        while arrivals and arrivals[0][0] <= clock:
            queue.push(arrivals.pop(0)[1])
        if not queue:
            clock = arrivals[0][0]
            continue
        prefer = (lambda job, model=resident: job.model == model) if resident and window is not None else None
        batch = queue.pop_batch(MAX_BATCH, prefer, window or 0.0)
        if batch[0].model != resident:
            loads += 1
            clock += load_seconds
            resident = batch[0].model
        for job in batch:
            waits.append(clock - arrived_at[job.job_id])
            per_model[job.model].append(clock - arrived_at[job.job_id])
        clock += sum(job.cost for job in batch) / SD15_PIXEL_STEPS_PER_S
    result = {"loads": loads, "images/s": len(timed) / clock, "p50": _pct(waits, 0.5), "p99": _pct(waits, 0.99)}
    return result | {f"{model} p99": _pct(w, 0.99) for model, w in sorted(per_model.items())}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--load-seconds", type=float, default=20.0, help="seconds one model load costs")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    timed = workload(catalog(), args.jobs, args.seed)
    print(f"{args.jobs} jobs, 24 users in 2 servers, models {', '.join(MODELS)}, load {args.load_seconds:g} s")
    print("waits in seconds from arrival to start; window in pixel-steps of fair-queue work")
    load_work = args.load_seconds * SD15_PIXEL_STEPS_PER_S  # the worker's default: work done during one load
    rows = [("no preference", None), ("4 SD images", AFFINITY_WINDOW), ("1/4 of a load", load_work / 4)]
    rows.append(("one load (default)", load_work))
    for label, window in rows:
        r = simulate(timed, window, args.load_seconds)
        cells = "  ".join(
            f"{key} {value:.2f}" if key == "images/s" else f"{key} {value:.0f}" for key, value in r.items()
        )
        print(f"{label:>20}  {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
