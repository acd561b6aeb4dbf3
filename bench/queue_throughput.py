"""The skewed workload of queue_sim, for real: Store (temp dir) + JobQueue + Worker + Engine on CPU.

The fair queue with batching off (max_batch=1) and on (max_batch=4), on one warm engine, alternating
configurations round by round (AB, BA, AB, ...) so drift on a noisy machine hits both alike. Arrival times
are in units of one warm single-image pipeline call, so the load is the same on any machine.
Run through bench/queue_sim.py, which prints the simulation table first and documents the flags.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import diffusers
import torch
import transformers

from generation.engine import Engine
from generation.request import GenerationRequest
from generation.specs import ModelSpec
from generation.tiny import write_tiny_model
from jobs.events import EventBus, JobCancelled, JobDone, JobEvent, JobFailed, JobStarted
from jobs.limits import Limits
from jobs.queue import JobQueue, Requester
from jobs.worker import Worker
from storage.store import Store

GUILD_A, GUILD_B = 1, 2
HEAVY_USER = 1
IMAGE_COUNTS = [(1, 0.75), (2, 0.15), (4, 0.10)]  # as in the simulation
CONFIGS = (1, 4)  # max_batch: off, on


@dataclass(frozen=True)
class Profile:
    """Model, picture and workload sizes for one real-model run."""

    model: str  # "tiny" (generation.tiny) or "mid" (bench/engine_overhead.build_mid_sd)
    size: int  # default side in pixels; light users also ask 1.5x the side, or 2x the steps
    steps: int
    heavy_jobs: int  # the heavy user's backlog at t=0, default shape, 1 image each
    light_a: int  # light users in the heavy user's guild
    light_b: int  # light users in the other guild
    # Light demand is about what the GPU serves unbatched, so light users contend without overloading it,
    # and the heavy backlog keeps it busy past the last arrival even when batching serves it faster.
    user_gap: float = 3.0  # mean gap between new light users, in single-image calls
    follow_gap: float = 2.0  # mean gap between one light user's jobs


PROFILES = {
    ("tiny", False): Profile("tiny", size=128, steps=8, heavy_jobs=50, light_a=3, light_b=7),
    ("tiny", True): Profile("tiny", size=128, steps=8, heavy_jobs=16, light_a=2, light_b=4),
    ("mid", False): Profile("mid", size=128, steps=4, heavy_jobs=12, light_a=2, light_b=4),
    ("mid", True): Profile("mid", size=128, steps=4, heavy_jobs=6, light_a=1, light_b=2),
}


@dataclass(frozen=True)
class Submission:
    at: float  # arrival, in single-image calls after the start
    user_id: int
    guild_id: int
    request: GenerationRequest


def _request(profile: Profile, prompt: str, seed: int, side: int, steps: int, count: int) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt, model=profile.model, width=side, height=side, steps=steps, guidance=7.0, seed=seed, count=count
    )


def make_workload(profile: Profile, seed: int) -> list[Submission]:
    """One heavy user's backlog at t=0 (guild A); light users in guilds A and B arriving as a Poisson process."""
    rng = random.Random(seed)
    wide = round(profile.size * 1.5 / 8) * 8
    shapes = [(profile.size, profile.steps, 0.70), (wide, profile.steps, 0.15), (profile.size, 2 * profile.steps, 0.15)]
    jobs = [
        Submission(0.0, HEAVY_USER, GUILD_A, _request(profile, f"heavy {i}", i, profile.size, profile.steps, 1))
        for i in range(profile.heavy_jobs)
    ]
    guilds = [GUILD_A] * profile.light_a + [GUILD_B] * profile.light_b
    rng.shuffle(guilds)
    t = 0.0
    for user, guild in enumerate(guilds, start=HEAVY_USER + 1):
        t += rng.expovariate(1 / profile.user_gap)
        at = t
        for n in range(rng.randint(1, 3)):
            side, steps, _ = rng.choices(shapes, weights=[s[2] for s in shapes])[0]
            count = rng.choices([c for c, _ in IMAGE_COUNTS], weights=[w for _, w in IMAGE_COUNTS])[0]
            jobs.append(
                Submission(at, user, guild, _request(profile, f"user {user} #{n}", user * 10 + n, side, steps, count))
            )
            at += rng.expovariate(1 / profile.follow_gap)
    return sorted(jobs, key=lambda s: s.at)


class TimedBus(EventBus):
    """An EventBus that stamps each job's first JobStarted and its final event as they are published."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.started: dict[int, float] = {}
        self.done: dict[int, float] = {}
        self.failed: dict[int, str] = {}
        self.expected = expected
        self.all_final = asyncio.Event()

    def publish(self, event: JobEvent) -> None:
        now = time.perf_counter()
        if isinstance(event, JobStarted):
            self.started.setdefault(event.job_id, now)
        elif isinstance(event, JobDone):
            self.done[event.job_id] = now
        elif isinstance(event, JobFailed | JobCancelled):
            self.failed[event.job_id] = getattr(event, "error", "cancelled")
        if len(self.done) + len(self.failed) >= self.expected:
            self.all_final.set()
        super().publish(event)


class CountingEngine:
    """Wraps the engine the worker calls: counts pipeline calls, their images and the busy time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: list[int] = []  # images per call
        self.busy_s = 0.0

    @property
    def resident(self) -> str | None:
        """The wrapped engine's resident model (the worker's model affinity asks)."""
        return self.engine.resident

    @property
    def resident_loras(self) -> frozenset[str]:
        """The wrapped engine's loaded LoRAs (the worker's affinity asks)."""
        return self.engine.resident_loras

    @property
    def load_seconds(self) -> float | None:
        """How long the wrapped engine's last model load took."""
        return self.engine.load_seconds

    def generate(self, requests: Sequence[GenerationRequest], on_progress=None, should_cancel=None):
        start = time.perf_counter()
        try:
            return self.engine.generate(requests, on_progress=on_progress, should_cancel=should_cancel)
        finally:
            self.calls.append(sum(r.count for r in requests))
            self.busy_s += time.perf_counter() - start


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile, as in the simulation."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(pct / 100 * len(ranked)) - 1)]


async def run_once(engine: Engine, workload: list[Submission], unit_s: float, max_batch: int, root: Path) -> dict:
    """Push the workload through a fresh store, queue and worker; the table's numbers for this run."""
    store = await Store.open(root / "db.sqlite3", root / "images")
    bus = TimedBus(len(workload))
    queue = JobQueue(store, bus, Limits.unlimited())
    counting = CountingEngine(engine)
    worker = Worker(counting, queue, max_batch=max_batch)  # duck-typed: generate, resident(_loras), load_seconds
    submitted: dict[int, tuple[float, Submission]] = {}
    t0 = time.perf_counter()

    async def submit(job: Submission) -> None:
        await asyncio.sleep(max(0.0, t0 + job.at * unit_s - time.perf_counter()))
        at = time.perf_counter()
        ticket = await queue.submit(job.request, Requester(job.user_id, job.guild_id, channel_id=1))
        submitted[ticket.job.id] = (at, job)

    try:
        for job in workload:  # the heavy backlog is queued before the worker starts
            if job.at == 0.0:
                await submit(job)
        worker.start()
        await asyncio.gather(*(submit(job) for job in workload if job.at > 0.0))
        await asyncio.wait_for(bus.all_final.wait(), timeout=600)
    finally:
        await worker.stop(timeout=5)
        await store.close()
    if bus.failed:
        raise RuntimeError(f"{len(bus.failed)} job(s) did not finish: {next(iter(bus.failed.values()))}")
    light = [job_id for job_id, (_, job) in submitted.items() if job.user_id != HEAVY_USER]
    heavy = [job_id for job_id, (_, job) in submitted.items() if job.user_id == HEAVY_USER]
    waits = [bus.started[j] - submitted[j][0] for j in light]
    latencies = [bus.done[j] - submitted[j][0] for j in light]
    elapsed = max(bus.done.values()) - t0
    images = sum(job.request.count for job in workload)
    return {
        "max_batch": max_batch,
        "images_per_s": images / elapsed,
        "wait_p50": percentile(waits, 50),
        "wait_p99": percentile(waits, 99),
        "lat_p50": percentile(latencies, 50),
        "lat_p99": percentile(latencies, 99),
        "heavy_done": max(bus.done[j] for j in heavy) - t0,
        "calls": len(counting.calls),
        "mean_batch": sum(counting.calls) / len(counting.calls),
        "busy": counting.busy_s / elapsed,
    }


def build_engine(profile: Profile, directory: Path) -> tuple[Engine, float]:
    """Write the profile's random-weight model, load it, return the engine and its UNet size in M params."""
    if profile.model == "tiny":
        write_tiny_model(directory)
    else:
        try:
            from bench.engine_overhead import build_mid_sd  # imported as a package module
        except ImportError:
            from engine_overhead import build_mid_sd  # run as a script: bench/ is on sys.path
        build_mid_sd().save_pretrained(directory)
    spec = ModelSpec(name=profile.model, source=str(directory), steps=profile.steps, width=profile.size)
    engine = Engine({profile.model: spec}, device="cpu")  # previews every 5 steps, as the bot runs
    unet = engine.load(profile.model).core_module()
    return engine, sum(p.numel() for p in unet.parameters()) / 1e6


def warm_up(engine: Engine, workload: list[Submission]) -> float:
    """Run every shape once alone and once batched; return a warm single-image call's seconds (the unit)."""
    shapes = {job.request.batch_key: job.request for job in workload}
    for request in shapes.values():
        batch = [request.with_changes(count=1)] * 2 + [request.with_changes(count=2)]
        engine.generate([request.with_changes(count=1)])
        engine.generate(batch)
    single = workload[0].request
    times: list[float] = []
    for _ in range(3):
        start = time.perf_counter()
        engine.generate([single])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Report:
    profile: Profile
    params_m: float
    threads: int
    unit_s: float
    workload: list[Submission]
    runs: list[dict] = field(default_factory=list)  # in the order they ran


def measure(model: str, quick: bool, rounds: int, seed: int, threads: int) -> Report:
    """Build, warm up, then run both configurations `rounds` times, alternating which goes first."""
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(threads)
    profile = PROFILES[(model, quick)]
    workload = make_workload(profile, seed)
    with tempfile.TemporaryDirectory(prefix="queue-bench-") as tmp:
        engine, params_m = build_engine(profile, Path(tmp) / "model")
        unit_s = warm_up(engine, workload)
        report = Report(profile, params_m, torch.get_num_threads(), unit_s, workload)
        for r in range(rounds):
            for max_batch in CONFIGS if r % 2 == 0 else CONFIGS[::-1]:
                root = Path(tmp) / f"run{len(report.runs)}"
                report.runs.append(asyncio.run(run_once(engine, workload, unit_s, max_batch, root)))
    return report


def format_report(report: Report) -> str:
    """The real-model section: conditions, workload, then one row per run and the medians."""
    p, jobs = report.profile, report.workload
    light_users = {job.user_id: job.guild_id for job in jobs if job.user_id != HEAVY_USER}
    in_a = sum(guild == GUILD_A for guild in light_users.values())
    n_light = sum(job.user_id != HEAVY_USER for job in jobs)
    images = sum(job.request.count for job in jobs)
    last = max(job.at for job in jobs)
    wide = round(p.size * 1.5 / 8) * 8
    order = "".join("AB"[CONFIGS.index(run["max_batch"])] for run in report.runs)
    lines = [
        f"Real model: Store + JobQueue + Worker + Engine, fair queue, {p.model} random-weight SD"
        f" (UNet {report.params_m:.2f}M params),",
        f"on CPU with torch {report.threads} thread(s), {p.size}x{p.size}, {p.steps} steps, CFG 7, previews every 5"
        " steps. Warm engine, fresh store per run.",
        f"Guild A: 1 heavy user ({p.heavy_jobs} jobs at t=0) + {in_a} light users. Guild B:"
        f" {len(light_users) - in_a} light users, who send {n_light} jobs",
        f"(1-3 each, 1/2/4 images, 15% {wide}x{wide}, 15% {2 * p.steps} steps) over {last * report.unit_s:.1f} s;"
        f" {len(jobs)} jobs, {images} images in all.",
        f"Arrival unit = one warm single-image call = {report.unit_s * 1000:.0f} ms. Runs in order {order}"
        f" (A: max_batch {CONFIGS[0]}, B: max_batch {CONFIGS[1]}).",
        "wait = submit to JobStarted, lat = submit to JobDone (light users' jobs; p99 = the worst of them).",
        "heavy done = start to the heavy user's last JobDone. images/s = all images / start to last JobDone.",
        "calls = pipeline calls, batch = mean images per call, busy = share of the wall time spent in calls.",
        "",
        f"{'run':<8}{'max_batch':>10}{'images/s':>10}{'wait p50':>10}{'wait p99':>10}{'lat p50':>10}{'lat p99':>10}"
        f"{'heavy done':>12}{'calls':>7}{'batch':>7}{'busy':>6}",
    ]

    def row(label: str, m: dict) -> str:
        return (
            f"{label:<8}{m['max_batch']:>10}{m['images_per_s']:>10.2f}{m['wait_p50']:>8.2f} s{m['wait_p99']:>8.2f} s"
            f"{m['lat_p50']:>8.2f} s{m['lat_p99']:>8.2f} s{m['heavy_done']:>10.2f} s{m['calls']:>7.0f}"
            f"{m['mean_batch']:>7.2f}{m['busy']:>6.0%}"
        )

    for n, run in enumerate(report.runs, start=1):
        lines.append(row(f"#{n}", run))
    if len(report.runs) > len(CONFIGS):
        for max_batch in CONFIGS:
            runs = [run for run in report.runs if run["max_batch"] == max_batch]
            median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            lines.append(row("median", median | {"max_batch": max_batch}))
    return "\n".join(lines)
