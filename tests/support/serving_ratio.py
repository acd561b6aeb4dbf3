"""Serving ratio: the real `imagine-bot run` process against a raw diffusers loop on the same tiny pipeline.

    python -m tests.support.serving_ratio [--reps 3]   (bench/serving_ratio.py runs this)

Both sides load the tiny random-weight SD pipeline that `generation.tiny` writes (the one every test uses:
UNet 16/32 channels, CLIP 32 wide) the way the bot loads it (`load_pipeline`: fp32 on CPU, the same torch
threads), and make `--jobs` single images at `--size`², `--steps` steps, guidance 7:

- raw: the pipeline called in batches of `--batch` (list prompts, a seeded generator per image), nothing else;
- bot: `--users` members send /imagine through the loopback fake Discord to the bot process, which queues,
  batches, previews, edits progress, encodes, stores and delivers every result. A first wave of one job per
  member arrives at once, then the rest every `--gap` seconds while the GPU loop is busy.

Images/s of the bot = jobs / (first /imagine sent → last result received by the fake). Acknowledgement
latency = interaction sent → its callback (the "Queued" answer) received by the fake: "busy" for the jobs
after the first wave (the GPU loop has work the whole time), "idle" for lone /imagines (1 step) sent with
nothing queued or running. Runs alternate raw, bot, raw, bot, … after one warm-up of each; the table shows
every repetition and the medians. The fake Discord runs in this process: its CPU time (it parses every
upload the bot sends, which real Discord does elsewhere) is printed, as it takes cores from the bot.

Columns besides the two figures, to see where the bot loses: "raw batch" / "bot batch" (median seconds from
one full batch's start to the next: the pipeline call and any gap between calls), "head" (first /imagine →
first batch started), "tail" (last batch started → last result received), CPU seconds per image of the raw
loop and of the whole bot process, the REST calls the bot made, and how it batched the jobs. `--background N`
keeps N busy processes on the cores through every run, as other work on the machine would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from storage.records import from_db_time
from tests.fake_discord import FakeDiscord, FakeUser, RecordedRequest
from tests.reliability.process import BotProcess, add_members, query, result_files

RESULT_TIMEOUT = 600.0
GUIDANCE = 7.0
PROMPTS = ("a lighthouse at dusk", "a red fox in snow", "a tiny cafe, pixel art", "a bowl of ramen")


@dataclass(frozen=True)
class Workload:
    """What both sides make, and how the bot's jobs arrive."""

    jobs: int
    users: int
    size: int
    steps: int
    batch: int
    gap: float  # seconds between arrivals after the first wave
    idle_probes: int  # lone 1-step /imagines per repetition, for the idle acknowledgement latency
    preview_every: int
    threads: int  # torch intra-op threads of both sides (the bot's [generation] cpu_threads)
    background: int  # busy processes sharing the cores with both sides the whole time ("other work")


@dataclass(frozen=True)
class RawRun:
    """One repetition of the raw loop."""

    images_per_second: float
    period: float  # median seconds per full batch
    cpu: float  # CPU seconds per image (the pipeline's, all its threads)


@dataclass
class BotRun:
    """One repetition through the bot."""

    seconds: float
    images: int
    batches: list[int]
    ack_busy: list[float]
    ack_first_wave: list[float]
    ack_idle: list[float]
    fake_cpu: float  # CPU seconds the fake Discord (this process) used during the run
    cpu: float  # CPU seconds per image the bot process used (pipeline, event loop, encoding, storing, all)
    head: float  # first /imagine sent -> first batch started (seconds)
    period: float  # median time from one full batch's start to the next's: pipeline call + gap between calls
    tail: float  # last batch started -> last result received
    requests: int  # REST requests the bot made to the fake during the run
    kinds: Counter[str] = field(default_factory=Counter)  # those requests by what they did
    errors: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Delivered images over the run's wall time."""
        return self.images / self.seconds


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def write_bench_config(folder: Path, fake: FakeDiscord, model_dir: Path, work: Workload, extra: str) -> Path:
    """The bot's config: the tiny model at the workload's size and steps, limits that let every job in."""
    path = folder / "config.toml"
    path.write_text(
        f"""
[discord]
api_base = "{fake.api_base}"
gateway_url = "{fake.gateway_url}"
guild_ids = [{fake.guild.id}]

[storage]
path = "data/imagine.sqlite3"
images_dir = "data/images"

[generation]
device = "cpu"
dtype = "float32"
default_model = "tiny"
max_batch = {work.batch}
preview_every = {work.preview_every}
cpu_threads = {work.threads}
{extra}

[limits]
max_steps = {max(work.steps, 50)}
max_queued_per_user = {work.jobs}

[[models]]
name = "tiny"
source = "{model_dir.as_posix()}"
steps = {work.steps}
guidance = {GUIDANCE}
width = {work.size}
height = {work.size}
"""
    )
    return path


class RawLoop:
    """The pipeline loaded as the bot loads it, called in batches with nothing around it."""

    def __init__(self, model_dir: Path, work: Workload) -> None:
        import torch

        from generation.families.stable_diffusion import load_pipeline
        from generation.specs import ModelSpec

        self.torch = torch
        self.work = work
        spec = ModelSpec(name="tiny", source=str(model_dir), steps=work.steps, width=work.size, height=work.size)
        self.pipe = load_pipeline(spec, torch.device("cpu"), torch.float32)

    def _call(self, count: int, steps: int, seed: int) -> None:
        torch = self.torch
        torch.set_num_threads(self.work.threads)  # per thread: set on the thread that runs the pipeline
        self.pipe(
            prompt=[PROMPTS[i % len(PROMPTS)] for i in range(count)],
            negative_prompt=[""] * count,
            generator=[torch.Generator("cpu").manual_seed(seed + i) for i in range(count)],
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            height=self.work.size,
            width=self.work.size,
        )

    def warm_up(self) -> None:
        """First calls of each shape build kernels and caches; the bot is warmed the same way."""
        self._call(self.work.batch, 2, 0)
        self._call(1, 2, 0)

    def run(self) -> RawRun:
        """`jobs` images in full batches (the last one smaller when they do not divide)."""
        work, made, calls = self.work, 0, []
        cpu = time.process_time()
        started = time.perf_counter()
        while made < work.jobs:
            count = min(work.batch, work.jobs - made)
            began = time.perf_counter()
            self._call(count, work.steps, made)
            calls.append((count, time.perf_counter() - began))
            made += count
        full = [seconds for count, seconds in calls if count == work.batch]
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return RawRun(work.jobs / seconds, statistics.median(full) if full else float("nan"), cpu / work.jobs)


class BotDriver:
    """Members of the fake's guild sending /imagine to the bot process, and what the fake saw."""

    def __init__(self, fake: FakeDiscord, bot: BotProcess, users: list[FakeUser], work: Workload) -> None:
        self.fake = fake
        self.bot = bot
        self.users = users
        self.work = work
        self._seeds = iter(range(10**9))

    def bot_cpu(self) -> float:
        """CPU seconds the bot process has used so far, all its threads (Linux /proc)."""
        assert self.bot.process is not None
        fields = Path(f"/proc/{self.bot.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def _callback(self, interaction_id: int, since: int) -> RecordedRequest | None:
        marker = f"/interactions/{interaction_id}/"
        return next((r for r in self.fake.requests[since:] if r.method == "POST" and marker in r.path), None)

    async def _send(self, user: FakeUser, steps: int, prompt: str) -> tuple[float, int]:
        options = {"prompt": prompt, "seed": next(self._seeds), "steps": steps}
        sent = time.monotonic()
        handle = await self.fake.send_slash_command("imagine", options, user=user)
        return sent, handle.id

    async def _ack(self, sent: float, interaction_id: int, since: int) -> float:
        request = await self.fake.signal.wait_for(
            lambda: self._callback(interaction_id, since), 60, f"no answer to interaction {interaction_id}"
        )
        return request.received_at - sent

    async def _results(self, since: int, count: int) -> list[RecordedRequest]:
        def delivered() -> list[RecordedRequest] | None:
            found = [r for r in self.fake.requests[since:] if r.answered and r.status < 300 and result_files(r)]
            return found if len(found) >= count else None

        return await self.fake.signal.wait_for(delivered, RESULT_TIMEOUT, f"{count} results")

    async def job(self, user: FakeUser, steps: int, prompt: str) -> None:
        """One /imagine, answered and delivered (warm-ups)."""
        since = len(self.fake.requests)
        await self._send(user, steps, prompt)
        await self._results(since, 1)

    async def run(self) -> BotRun:
        """One repetition: idle probes, then the workload."""
        fake, work = self.fake, self.work
        idle = []
        for n in range(work.idle_probes):
            since = len(fake.requests)
            sent, interaction = await self._send(self.users[n % len(self.users)], 1, f"idle probe {n}")
            idle.append(await self._ack(sent, interaction, since))
            await self._results(since, 1)
        await asyncio.sleep(0.5)  # the last probe's trailing edits land before the clock starts
        first_job = query(self.bot.db, "SELECT COALESCE(MAX(id), 0) AS id FROM jobs")[0]["id"] + 1
        since = len(fake.requests)
        cpu, bot_cpu = time.process_time(), self.bot_cpu()
        started, wall = time.monotonic(), time.time()
        sends = []
        for n in range(work.jobs):
            if n >= work.users:
                await asyncio.sleep(max(0.0, started + (n - work.users + 1) * work.gap - time.monotonic()))
            user = self.users[n % work.users]
            sends.append(await self._send(user, work.steps, f"{PROMPTS[n % len(PROMPTS)]} #{n}"))
        acks = [await self._ack(sent, interaction, since) for sent, interaction in sends]
        results = await self._results(since, work.jobs)
        ended = max(r.answered_at or r.received_at for r in results)
        fake_cpu, bot_cpu = time.process_time() - cpu, self.bot_cpu() - bot_cpu
        rows = query(self.bot.db, "SELECT started_at, status FROM jobs WHERE id >= ?", (first_job,))
        errors = (
            [f"{sum(r['status'] != 'done' for r in rows)} job(s) not done"]
            if any(r["status"] != "done" for r in rows)
            else []
        )
        delivered = {job for r in results for job in result_files(r)}
        if len(delivered) != work.jobs or len(results) != work.jobs:
            errors.append(f"{len(results)} result uploads for {len(delivered)} of {work.jobs} jobs")
        sizes = Counter(r["started_at"] for r in rows)
        starts = [started + from_db_time(at).timestamp() - wall for at in sorted(sizes)]
        full = [b - a for a, b, at in zip(starts, starts[1:], sorted(sizes), strict=False) if sizes[at] == work.batch]
        return BotRun(
            seconds=ended - started,
            head=starts[0] - started,
            period=statistics.median(full) if full else float("nan"),
            tail=ended - starts[-1],
            images=len(results),
            batches=sorted(sizes.values(), reverse=True),
            ack_busy=acks[work.users :],
            ack_first_wave=acks[: work.users],
            ack_idle=idle,
            fake_cpu=fake_cpu,
            cpu=bot_cpu / len(results),
            requests=len(fake.requests) - since,
            kinds=Counter(_kind(r) for r in fake.requests[since:]),
            errors=errors,
        )


def _kind(request: RecordedRequest) -> str:
    if "/callback" in request.path:
        return "interaction answers"
    if result_files(request):
        return "results"
    if any(f.filename.startswith("preview") for f in request.files):
        return "progress edits with a preview"
    if request.method == "PATCH":
        return "other edits (progress, queue position)"
    return f"other {request.method}"


def _batches_text(batches: list[int]) -> str:
    counts = Counter(batches)
    return "+".join(f"{size}x{n}" for size, n in sorted(counts.items(), reverse=True))


COLUMNS = (
    # title, unit, width
    ("rep", "", 6),
    ("raw", "img/s", 7),
    ("bot", "img/s", 7),
    ("ratio", "", 6),
    ("idle ack", "p50 ms", 8),
    ("idle ack", "p99 ms", 8),
    ("busy ack", "p50 ms", 8),
    ("busy ack", "p99 ms", 8),
    ("wave ack", "p99 ms", 8),
    ("raw batch", "s", 9),
    ("bot batch", "s", 9),
    ("head", "s", 6),
    ("tail", "s", 6),
    ("raw CPU", "s/img", 8),
    ("bot CPU", "s/img", 8),
    ("fake CPU", "s", 8),
    ("REST", "calls", 6),
)


def _line(values: list[str]) -> str:
    return " ".join(value.rjust(width) for value, (_, _, width) in zip(values, COLUMNS, strict=False))


def _figures(raw: RawRun, run: BotRun) -> list[float]:
    return [
        raw.images_per_second,
        run.images_per_second,
        run.images_per_second / raw.images_per_second,
        percentile(run.ack_idle, 50) * 1000,
        percentile(run.ack_idle, 99) * 1000,
        percentile(run.ack_busy, 50) * 1000,
        percentile(run.ack_busy, 99) * 1000,
        percentile(run.ack_first_wave, 99) * 1000,
        raw.period,
        run.period,
        run.head,
        run.tail,
        raw.cpu,
        run.cpu,
        run.fake_cpu,
        run.requests,
    ]


FORMATS = ("{:.3f}", "{:.3f}", "{:.3f}", "{:.1f}", "{:.1f}", "{:.1f}", "{:.1f}", "{:.1f}", "{:.3f}", "{:.3f}")
FORMATS += ("{:.3f}", "{:.3f}", "{:.3f}", "{:.3f}", "{:.2f}", "{:.0f}")


def table(raws: list[RawRun], runs: list[BotRun]) -> list[str]:
    """Every repetition and the medians, one line each, under a two-line header."""
    lines = [_line([title for title, _, _ in COLUMNS]), _line([unit for _, unit, _ in COLUMNS])]
    rows = [_figures(raw, run) for raw, run in zip(raws, runs, strict=True)]
    for n, (row, run) in enumerate(zip(rows, runs, strict=True), start=1):
        texts = [f.format(v) for f, v in zip(FORMATS, row, strict=True)]
        lines.append(_line([f"#{n}", *texts]) + f"  batches {_batches_text(run.batches)}")
    medians = [statistics.median(column) for column in zip(*rows, strict=True)]
    lines.append(_line(["median", *(f.format(v) for f, v in zip(FORMATS, medians, strict=True))]))
    return lines


async def measure(work: Workload, reps: int, folder: Path, model_dir: Path, extra: str) -> int:
    """Warm both sides up, run `reps` interleaved repetitions, print the table; 1 if any job went wrong."""
    loop = asyncio.get_running_loop()
    gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw")  # one pipeline thread, as the bot's
    raw = await loop.run_in_executor(gpu, RawLoop, model_dir, work)
    await loop.run_in_executor(gpu, raw.warm_up)
    async with FakeDiscord() as fake:
        users = [fake.member, fake.other_member, *add_members(fake, [f"user{i}" for i in range(work.users - 2)])]
        config = write_bench_config(folder, fake, model_dir, work, extra)
        bot = await BotProcess(config, fake, folder / "bot.log").start()
        burners: list[subprocess.Popen] = []
        try:
            driver = BotDriver(fake, bot, users, work)
            burners += [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(work.background)]
            await asyncio.gather(*(driver.job(users[i], 2, f"warm-up {i}") for i in range(work.batch)))
            await driver.job(users[0], 2, "warm-up lone")
            raws, runs = [], []
            for _ in range(reps):
                raws.append(await loop.run_in_executor(gpu, raw.run))
                runs.append(await driver.run())
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()
            exit_status = await bot.stop()
            gpu.shutdown()
        log = bot.output()
    print("\n".join(table(raws, runs)))
    print("REST calls of the last repetition: " + ", ".join(f"{n} {kind}" for kind, n in runs[-1].kinds.most_common()))
    ratios = [run.images_per_second / raw.images_per_second for raw, run in zip(raws, runs, strict=True)]
    ratio = statistics.median(ratios)
    p99_busy = statistics.median([percentile(run.ack_busy, 99) for run in runs])
    p99_idle = statistics.median([percentile(run.ack_idle, 99) for run in runs])
    every_busy = [a for run in runs for a in run.ack_busy]
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"\nserving ratio (bot / raw images/s, median of {reps}): {ratio:.3f}x  (target >= 0.97x)\n"
        f"acknowledgement p99 while the GPU loop is busy (median of {reps}): {p99_busy * 1000:.1f} ms, worst of "
        f"all {len(every_busy)}: {max(every_busy) * 1000:.1f} ms  (target < 50 ms); idle: {p99_idle * 1000:.1f} ms\n"
        f"load average at the end: {load} (other work on the machine skews both sides)"
    )
    errors = [error for run in runs for error in run.errors]
    errors += [f"bot log: {line}" for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    if exit_status != 0:
        errors.append(f"bot exit status {exit_status}")
    print(f"errors: {len(errors)}" + "".join(f"\n  {error}" for error in errors[:20]))
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4, help="raw batch size and the bot's [generation] max_batch")
    parser.add_argument("--gap", type=float, default=0.25, help="seconds between arrivals after the first wave")
    parser.add_argument("--idle-probes", type=int, default=5)
    parser.add_argument("--preview-every", type=int, default=5, help="[generation] preview_every (0: off)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads of both sides (default: the bot's, every core but one)"
    )
    parser.add_argument(
        "--config", default="", help="more [generation] lines for the bot, not one this script sets (see --threads)"
    )
    parser.add_argument(
        "--background", type=int, default=0, help="busy processes sharing the cores during all runs (other work)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 rep, 8 jobs, 4 users, 64², 4 steps")
    args = parser.parse_args()
    import torch

    if args.quick:
        args.reps, args.jobs, args.users, args.size, args.steps, args.idle_probes = 1, 8, 4, 64, 4, 2
        args.preview_every, args.gap = 2, 0.05
    from generation.device import pipeline_threads

    threads = args.threads or pipeline_threads(torch.device("cpu"))
    work = Workload(
        args.jobs,
        args.users,
        args.size,
        args.steps,
        args.batch,
        args.gap,
        args.idle_probes,
        args.preview_every,
        threads,
        args.background,
    )
    print(
        f"serving ratio: tiny SD (generation.tiny, random weights) {work.size}x{work.size}, {work.steps} steps, "
        f"guidance {GUIDANCE:g}, previews every {work.preview_every} steps; {work.jobs} single-image jobs from "
        f"{work.users} users ({work.users} at once, then one every {work.gap:g} s) vs raw diffusers in batches "
        f"of {work.batch}; torch {threads} thread(s) on {os.cpu_count()} CPU(s); {args.reps} repetitions, "
        "interleaved"
        + (f"; {work.background} busy process(es) share the cores" if work.background else "; nothing else running")
        + (f"; bot [generation] {args.config}" if args.config else ""),
        flush=True,
    )
    from generation.tiny import write_tiny_model

    with tempfile.TemporaryDirectory(prefix="imagine-ratio-") as temp:
        folder = Path(temp)
        model = write_tiny_model(folder / "tiny-sd", "sd")
        return asyncio.run(measure(work, args.reps, folder, model, args.config))


if __name__ == "__main__":
    sys.exit(main())
