"""Discrete-event simulation: FIFO vs fair scheduling, with and without batching, under skewed demand.

Then the same kind of workload for real (bench/queue_throughput.py): the store, the queue, the worker and the
engine on CPU with a random-weight model, fair queue with batching off vs on, interleaved.

Run: .venv/bin/python bench/queue_sim.py   (simulation well under a second; real-model part ~1-3 minutes)
     --quick     smaller real-model workload, one round (~30 s in all)
     --no-model  the simulation table only (no torch)
     --mid       the mid-size model (bench/engine_overhead.build_mid_sd) instead of the tiny one: slow on CPU
"""

from __future__ import annotations

import argparse
import math
import random
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from jobs.fair_queue import FairQueue, GuildKey, QueuedJob

BASE_IMAGE_COST = 512 * 512 * 20  # one default SD1.5 image: 512², 20 steps
GUILD_A, GUILD_B = 1, 2
HEAVY_USER = 1

# (batch_key, width, height, steps, share of light requests)
SHAPES = [
    ("sd15-512-20", 512, 512, 20, 0.70),
    ("sd15-768-20", 768, 768, 20, 0.15),
    ("sd15-512-40", 512, 512, 40, 0.15),
]
IMAGE_COUNTS = [(1, 0.75), (2, 0.15), (4, 0.10)]


class FifoQueue:
    """The baseline every open Discord image bot uses: one global FIFO (their per-user cap only rejects)."""

    def __init__(self) -> None:
        self._jobs: dict[int, QueuedJob] = {}  # insertion order is arrival order

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def push(self, job: QueuedJob) -> None:
        """Queue a job at the back."""
        self._jobs[job.job_id] = job

    def pop_batch(self, max_images: int) -> list[QueuedJob]:
        """The oldest job plus later jobs with its batch_key, up to max_images images."""
        order = self.order()
        if not order:
            return []
        batch, room = [order[0]], max_images - order[0].images
        for job in order[1:]:
            if room <= 0:
                break
            if job.batch_key == order[0].batch_key and job.images <= room:
                batch.append(job)
                room -= job.images
        for job in batch:
            del self._jobs[job.job_id]
        return batch

    def remove(self, job_id: int) -> QueuedJob | None:
        """Cancel a queued job."""
        return self._jobs.pop(job_id, None)

    def order(self) -> list[QueuedJob]:
        """Service order: arrival order."""
        return list(self._jobs.values())

    def position(self, job_id: int) -> int | None:
        """1-based place in arrival order."""
        for place, job in enumerate(self._jobs.values(), start=1):
            if job.job_id == job_id:
                return place
        return None


Scheduler = FairQueue | FifoQueue


@dataclass(frozen=True)
class Arrival:
    time: float
    job: QueuedJob


@dataclass(frozen=True)
class SimulatedGpu:
    """A GPU call costs a fixed overhead plus time proportional to its pixel-steps, so batching pays."""

    overhead_s: float = 0.5
    image_s: float = 0.5  # per default image (512², 20 steps)

    def call_seconds(self, batch: Iterable[QueuedJob]) -> float:
        """Wall time of one pipeline call over these jobs."""
        return self.overhead_s + self.image_s * sum(job.cost for job in batch) / BASE_IMAGE_COST


@dataclass
class SimResult:
    arrivals: list[Arrival]
    start: dict[int, float] = field(default_factory=dict)  # job_id -> start of its GPU call
    finish: dict[int, float] = field(default_factory=dict)
    busy_s: float = 0.0


def make_workload(seed: int, heavy_jobs: int = 200, light_a: int = 5, light_b: int = 25) -> list[Arrival]:
    """One heavy user with a backlog at t=0, and light users arriving as a Poisson process."""
    rng = random.Random(seed)
    ids = iter(range(1, 1_000_000))
    arrivals = [
        Arrival(0.0, QueuedJob(next(ids), HEAVY_USER, GUILD_A, BASE_IMAGE_COST, SHAPES[0][0]))
        for _ in range(heavy_jobs)
    ]
    guilds = [GUILD_A] * light_a + [GUILD_B] * light_b
    rng.shuffle(guilds)
    t = 0.0
    for user, guild in enumerate(guilds, start=HEAVY_USER + 1):
        t += rng.expovariate(1 / 8.0)  # a new light user every 8 s on average: contention, not overload
        at = t
        for _ in range(rng.randint(1, 3)):
            key, width, height, steps, _ = rng.choices(SHAPES, weights=[s[4] for s in SHAPES])[0]
            images = rng.choices([c for c, _ in IMAGE_COUNTS], weights=[w for _, w in IMAGE_COUNTS])[0]
            job = QueuedJob(next(ids), user, guild, width * height * steps * images, key, images)
            arrivals.append(Arrival(at, job))
            at += rng.expovariate(1 / 5.0)  # their next /imagine a few seconds later
    return sorted(arrivals, key=lambda a: (a.time, a.job.job_id))


def simulate(queue: Scheduler, arrivals: list[Arrival], gpu: SimulatedGpu, max_images: int) -> SimResult:
    """Run the single GPU loop: pop a batch whenever the GPU is free, never idle while jobs wait."""
    result = SimResult(arrivals)
    pending = deque(arrivals)
    now = 0.0
    while pending or len(queue):
        while pending and pending[0].time <= now:
            queue.push(pending.popleft().job)
        if not len(queue):
            now = pending[0].time
            continue
        batch = queue.pop_batch(max_images)
        seconds = gpu.call_seconds(batch)
        for job in batch:
            result.start[job.job_id] = now
            result.finish[job.job_id] = now + seconds
        now += seconds
        result.busy_s += seconds
    return result


def fluid_fair_finish(arrivals: list[Arrival], rate: float) -> dict[int, float]:
    """Finish times under ideal fluid fair sharing (GPS): guilds split equally, then users in a guild."""
    pending = deque(arrivals)
    queues: dict[tuple[GuildKey, int], deque[list]] = defaultdict(deque)  # [job_id, work left]
    finish: dict[int, float] = {}
    now = 0.0
    while pending or any(queues.values()):
        while pending and pending[0].time <= now + 1e-12:
            job = pending.popleft().job
            queues[(job.guild_id, job.user_id)].append([job.job_id, float(job.cost)])
        active = {flow: q for flow, q in queues.items() if q}
        if not active:
            now = pending[0].time
            continue
        per_guild: dict[GuildKey, int] = defaultdict(int)
        for guild, _ in active:
            per_guild[guild] += 1
        speeds = {flow: rate / len(per_guild) / per_guild[flow[0]] for flow in active}
        step = min(q[0][1] / speeds[flow] for flow, q in active.items())
        if pending:
            step = min(step, pending[0].time - now)
        now += step
        for flow, q in active.items():
            q[0][1] -= speeds[flow] * step
            if q[0][1] <= 1e-6 * BASE_IMAGE_COST:
                finish[q.popleft()[0]] = now
    return finish


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one value takes everything."""
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(pct / 100 * len(ranked)) - 1)]


def summarize(result: SimResult) -> dict[str, float]:
    """The table's numbers for one run."""
    jobs = [a.job for a in result.arrivals]
    arrived = {a.job.job_id: a.time for a in result.arrivals}
    total_cost = sum(job.cost for job in jobs)
    ideal = fluid_fair_finish(result.arrivals, rate=total_cost / result.busy_s)
    response: dict[int, list[float]] = defaultdict(list)
    ideal_response: dict[int, list[float]] = defaultdict(list)
    for job in jobs:
        response[job.user_id].append(result.finish[job.job_id] - arrived[job.job_id])
        ideal_response[job.user_id].append(ideal[job.job_id] - arrived[job.job_id])
    scores = [min(1.0, sum(ideal_response[u]) / sum(response[u])) for u in response]
    light = [j.job_id for j in jobs if j.user_id != HEAVY_USER]
    light_waits = [result.start[j] - arrived[j] for j in light]
    return {
        "jain": jain(scores),
        "light_p50": percentile(light_waits, 50),
        "light_p99": percentile(light_waits, 99),
        "light_response_p50": percentile([result.finish[j] - arrived[j] for j in light], 50),
        "heavy_done": max(result.finish[j.job_id] for j in jobs if j.user_id == HEAVY_USER),
        # Per busy second: the load is below capacity, so per wall second would only echo arrivals.
        "images_per_s": sum(job.images for job in jobs) / result.busy_s,
    }


def simulation_rows(seed: int, gpu: SimulatedGpu, max_batch: int) -> list[tuple[str, int, dict[str, float]]]:
    """Every scheduler x batching combination on the same workload."""
    arrivals = make_workload(seed)
    rows = []
    for name, make in (("fifo", FifoQueue), ("fair", FairQueue)):
        for batch in (1, max_batch):
            rows.append((name, batch, summarize(simulate(make(), arrivals, gpu, batch))))
    return rows


def format_simulation(seed: int, gpu: SimulatedGpu, max_batch: int) -> str:
    """The simulation section: a header explaining the setup, then one row per configuration."""
    arrivals = make_workload(seed)
    heavy = sum(a.job.user_id == HEAVY_USER for a in arrivals)
    light = {a.job.user_id: a.job.guild_id for a in arrivals if a.job.user_id != HEAVY_USER}
    in_a = sum(guild == GUILD_A for guild in light.values())
    n_light, n_jobs = len(light), len(arrivals) - heavy
    lines = [
        f"Queue simulation (seed {seed}). Guild A: 1 heavy user ({heavy} default jobs at t=0) + {in_a} light"
        f" users. Guild B: {n_light - in_a} light users.",
        f"The {n_light} light users send 1-3 jobs each ({n_jobs} in all, mixed size/steps/count), arriving as a"
        " Poisson process",
        f"(a new user every 8 s on average). Simulated GPU call = {gpu.overhead_s:.2f} s + {gpu.image_s:.2f} s"
        " per 512²x20-step image.",
        "Jain  = Jain's index over users of min(1, R_ideal / R), R = a user's mean response time (arrival to",
        "        finish), R_ideal = the same under ideal fluid fair sharing (guilds equal, then users equal)",
        "        at this run's throughput. 1.000 = nobody waits longer than perfect sharing would make them.",
        "wait  = arrival to the start of the GPU call that serves the job; resp = arrival to finish",
        "        (light users' jobs). images/s = images per second of GPU time (calls back to back).",
        "Batching lowers Jain through resp, not wait: a light job rides in a longer call with others.",
        "",
        f"{'scheduler':<10}{'max_batch':>10}{'Jain':>8}{'wait p50':>10}{'wait p99':>10}{'resp p50':>10}"
        f"{'heavy done':>12}{'images/s':>10}",
    ]
    for name, batch, m in simulation_rows(seed, gpu, max_batch):
        lines.append(
            f"{name:<10}{batch:>10}{m['jain']:>8.3f}{m['light_p50']:>8.1f} s{m['light_p99']:>8.1f} s"
            f"{m['light_response_p50']:>8.1f} s{m['heavy_done']:>10.1f} s{m['images_per_s']:>10.2f}"
        )
    return "\n".join(lines)


def format_real_model(quick: bool, mid: bool, rounds: int | None, seed: int, threads: int) -> str:
    """The real-model section (imports torch and diffusers, so only when asked for)."""
    try:
        from bench import queue_throughput  # imported as a package module
    except ImportError:
        import queue_throughput  # run as a script: bench/ is on sys.path
    rounds = rounds or (1 if quick else 3)
    report = queue_throughput.measure("mid" if mid else "tiny", quick, rounds, seed, threads)
    return queue_throughput.format_report(report)


def main(argv: list[str] | None = None) -> None:
    """Print the simulation table, then (unless --no-model) the real-model table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-batch", type=int, default=4, help="simulation only; the real model runs 1 vs 4")
    parser.add_argument("--quick", action="store_true", help="smaller real-model workload, one round")
    parser.add_argument("--no-model", action="store_true", help="skip the real-model part")
    parser.add_argument("--mid", action="store_true", help="real-model part on the mid-size model (slow)")
    parser.add_argument("--rounds", type=int, help="real-model rounds of both configs (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the real model")
    args = parser.parse_args(argv)
    print(format_simulation(args.seed, SimulatedGpu(), args.max_batch), flush=True)
    if not args.no_model:
        print()
        print(format_real_model(args.quick, args.mid, args.rounds, args.seed, args.threads))


if __name__ == "__main__":
    main()
