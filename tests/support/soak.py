"""Soak: many users' jobs through the loopback fake Discord into a real `imagine-bot run` process.

    python -m tests.support.soak [--jobs 500]  (bench/soak.py runs this) [--users 25] [--baseline 100]

Each simulated user sends a job, waits for its result, and sends the next: /imagine (one image, then a
2-image grid), /imagine with a picture (img2img) and reply remixes, on the tiny random-weight model on CPU.
Prints the bot's resident memory at the `--baseline`-th finished job and at the last, the growth between
them, and every error (a refusal, a missing result, an ERROR line in the bot's log).
tests/reliability/test_soak.py runs the same with fewer jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from tests.bot.conftest import has_image, png
from tests.fake_discord import FakeDiscord, FakeUser
from tests.reliability.process import BotProcess, add_members, integrity, query, replying_to, write_config

MiB = 1024 * 1024
JOB_TIMEOUT = 300.0


@dataclass
class SoakReport:
    """What a soak run measured."""

    jobs: int
    users: int
    seconds: float
    baseline_at: int
    rss_baseline: int = 0
    rss_end: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    samples: list[tuple[int, int]] = field(default_factory=list)
    exit_status: int | None = None

    @property
    def growth(self) -> float:
        """Resident memory growth from the baseline job to the last, as a fraction."""
        return self.rss_end / self.rss_baseline - 1

    def lines(self) -> list[str]:
        """The report as printed."""
        p50 = statistics.median(self.latencies) if self.latencies else 0.0
        p95 = statistics.quantiles(self.latencies, n=20)[-1] if len(self.latencies) > 1 else p50
        memory = ", ".join(f"{done}: {rss / MiB:.0f}" for done, rss in self.samples)
        return [
            f"soak: {self.jobs} jobs from {self.users} users in {self.seconds:.1f} s "
            f"({self.jobs / self.seconds:.2f} jobs/s), result latency p50 {p50:.1f} s, p95 {p95:.1f} s",
            f"errors: {len(self.errors)}" + "".join(f"\n  {error}" for error in self.errors[:20]),
            f"RSS (MiB) by finished jobs: {memory}",
            f"RSS at job {self.baseline_at}: {self.rss_baseline / MiB:.1f} MiB; at job {self.jobs}: "
            f"{self.rss_end / MiB:.1f} MiB; growth {self.growth * 100:+.1f}%",
        ]


class Soak:
    """Simulated users driving one bot process."""

    def __init__(self, fake: FakeDiscord, bot: BotProcess, users: list[FakeUser], jobs: int, baseline_at: int):
        self.fake = fake
        self.bot = bot
        self.users = users
        self.report = SoakReport(jobs, len(users), 0.0, baseline_at)
        self._numbers = itertools.count()
        self._finished = 0
        self._sample_every = max(1, jobs // 10)
        self._pictures: dict[int, dict] = {}

    async def run(self) -> SoakReport:
        started = time.monotonic()
        await asyncio.gather(*(self._user(user) for user in self.users))
        self.report.seconds = time.monotonic() - started
        self.report.rss_end = self.bot.rss()
        return self.report

    async def _user(self, user: FakeUser) -> None:
        while (n := next(self._numbers)) < self.report.jobs:
            started = time.monotonic()
            try:
                message = await self._job(user, n)
            except TimeoutError:
                self.report.errors.append(f"job {n} ({user.username}): no result within {JOB_TIMEOUT:.0f} s")
                continue
            if not has_image(message):
                self.report.errors.append(f"job {n} ({user.username}): {message['content'][:200]!r}")
            self.report.latencies.append(time.monotonic() - started)
            self._finished += 1
            if self._finished == self.report.baseline_at:
                self.report.rss_baseline = self.bot.rss()
            if self._finished % self._sample_every == 0 or self._finished == self.report.baseline_at:
                self.report.samples.append((self._finished, self.bot.rss()))

    async def _job(self, user: FakeUser, n: int) -> dict:
        fake = self.fake
        finished = lambda m: "⚠️" in m["content"] or has_image(m)  # noqa: E731
        kind = n % 5
        if kind == 3:  # reply remix of the user's own picture
            picture = self._pictures.get(user.id)
            if picture is None:
                attachments = [("pic.png", png((64, 64), (n % 255, 90, 160)), "image/png")]
                picture = self._pictures[user.id] = await fake.post_user_message(
                    "mine", attachments=attachments, user=user
                )
            reply = await fake.post_user_message(f"soak {n} --steps 2", reply_to=int(picture["id"]), user=user)
            return await fake.wait_for_message(lambda m: replying_to(fake, reply)(m) and finished(m), JOB_TIMEOUT)
        options: dict = {"prompt": f"soak {n}", "steps": 2, "seed": n}
        attachments = None
        if kind == 1:
            options["count"] = 2
        elif kind == 2:
            attachments = {"image": ("in.png", png((64, 64), (40, n % 255, 90)), "image/png")}
        handle = await fake.send_slash_command("imagine", options, user=user, attachments=attachments)
        return await handle.wait_for_message(finished, JOB_TIMEOUT)


async def run_soak(jobs: int, users: int, folder: Path, model_dir: Path, baseline_at: int = 100) -> SoakReport:
    """Start a fake Discord and the bot, run the soak, stop the bot, and check what it left behind."""
    async with FakeDiscord() as fake:
        people = add_members(fake, [f"soaker{i}" for i in range(users)])
        config = write_config(folder, fake, model_dir, limits={"max_steps": 10, "max_queued_per_user": 3})
        bot = await BotProcess(config, fake, folder / "bot.log").start()
        try:
            report = await Soak(fake, bot, people, jobs, min(baseline_at, jobs)).run()
        finally:
            report_exit = await bot.stop()
        report.exit_status = report_exit
        log = bot.output()
        report.errors += [f"bot log: {line}" for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
        if fake.token in log:
            report.errors.append("bot log: contains the token")
        stored = query(bot.db, "SELECT status, delivered_at FROM jobs")
        undelivered = [row for row in stored if row["status"] != "done" or not row["delivered_at"]]
        if len(stored) != jobs or undelivered:
            report.errors.append(f"store: {len(stored)} jobs, {len(undelivered)} not done and delivered")
        if (status := integrity(bot.db)) != "ok":
            report.errors.append(f"store: integrity_check {status}")
        if report_exit != 0:
            report.errors.append(f"bot exit status {report_exit}")
        return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--users", type=int, default=25)
    parser.add_argument("--baseline", type=int, default=100, help="measure RSS growth from this finished job")
    args = parser.parse_args()
    from generation.tiny import write_tiny_model

    with tempfile.TemporaryDirectory(prefix="imagine-soak-") as temp:
        folder = Path(temp)
        model = write_tiny_model(folder / "tiny-sd", "sd")
        report = asyncio.run(run_soak(args.jobs, args.users, folder, model, args.baseline))
    print("\n".join(report.lines()))
    return 0 if not report.errors and report.growth < 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
