"""A fair, in-memory scheduler for GPU jobs: fair share across guilds, then across users in a guild.

Pure and synchronous: no I/O, no asyncio, no storage. A durable wrapper owns persistence.

Algorithm: hierarchical start-time fair queuing (SFQ, Goyal, Vin & Cheng 1996), two levels.
Each backlogged user (within a guild) and each backlogged guild (at the root) carries a start tag in
virtual time; the next job is the head of the user with the smallest start tag inside the guild with
the smallest start tag (ties: whoever has waited longest). Serving a job of cost c advances its user's
tag by c / user weight and its guild's tag by c / guild weight. Each level's virtual time v is the start
tag of the last job it picked. A flow that becomes backlogged starts at max(v, its old tag), so an idle
user banks no credit and a user who just had a turn cannot skip ahead by leaving and coming back.

Why SFQ rather than deficit round robin: DRR needs a quantum at least the largest job for O(1) picks,
and our costs span ~500x (512² x 20 steps up to 2048² x 150 steps x 4); a large quantum makes a user
take a quantum's worth of small jobs in a row and a newcomer wait a whole round of quanta. SFQ orders
by start tags only, so a job's own size never decides when it starts, cost is charged after the pick
(which is what batching and cancellation need), and the bound needs no quantum: for two users (or two
guilds) backlogged over any stretch of single-job pops,
    |W_f / w_f - W_g / w_g| <= c_f / w_f + c_g / w_g
with W the pixel-steps served and c the largest job cost of each (from a common start: the larger of
the two terms). A newly arriving job starts at v, the tag of the job just picked, so it waits only for
flows still tied at v, one job each: behind a lone heavy user, one job at most.

Batching: pop_batch takes the fair pick, then walks the simulated fair order for jobs with the same
batch_key. Every job taken is charged in full to its user and guild, as if served in turn, so a user who
got extra batch slots waits that much longer later, and nobody else's tags move.

Model affinity: switching the GPU's resident model costs a load (seconds to a minute), so pop_batch may
start with a job whose model is resident instead of the fair pick, but only one whose flows are at most
`window` (pixel-steps of virtual time) ahead at both levels: its guild's tag against the fair pick's
guild, its user's tag against the least-served user of its guild. The chosen job is charged as usual, so
the bound above grows by `window` and no more (tests/jobs/test_model_affinity.py checks it). A preference
may rank (an int, higher is better, e.g. resident model and LoRAs > resident model > neither): the best-ranked
job within the window goes first, the earliest of equals.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field

GuildKey = int | None  # None: direct messages, scheduled as one guild of their own


@dataclass(frozen=True)
class QueuedJob:
    """What the scheduler needs to know about one queued generation job, or one chunk of a LoRA training."""

    job_id: int  # a job's id; minus the training's id for a training chunk (jobs.training)
    user_id: int
    guild_id: GuildKey
    cost: float  # pixel-steps (width x height x steps x images); the fairness unit
    batch_key: Hashable  # jobs with equal keys may share one GPU call
    images: int = 1  # images this job produces; counts toward a batch's max_images
    weight: float = 1.0  # the user's share weight when this job was queued
    model: str | None = None  # which model it runs on, for model affinity
    adapters: frozenset[str] = frozenset()  # the LoRAs it needs: with `model`, the affinity key

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cost) and self.cost > 0):
            raise ValueError(f"job cost must be a positive number, not {self.cost!r}")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"job weight must be a positive number, not {self.weight!r}")
        if self.images < 1:
            raise ValueError(f"a job must produce at least one image, not {self.images}")

    @property
    def training_id(self) -> int | None:
        """The training this is a chunk of; None for an image job."""
        return -self.job_id if self.job_id < 0 else None


@dataclass
class _UserFlow:
    jobs: deque[QueuedJob] = field(default_factory=deque)
    start: float = 0.0  # start tag of the next service; while idle, the finish tag of the last one
    seq: int = 0  # tie-break: lower means it has waited longer at this tag


@dataclass
class _GuildNode:
    start: float = 0.0
    seq: int = 0
    vtime: float = 0.0  # virtual time among this guild's users
    users: dict[int, _UserFlow] = field(default_factory=dict)
    backlogged: int = 0  # users with queued jobs
    sweep_at: int = 32  # forget idle users when the dict grows past this


class FairQueue:
    """Per-user FIFOs scheduled by weighted fair share: guilds first, then users within a guild."""

    def __init__(self, guild_weights: Mapping[GuildKey, float] | None = None) -> None:
        self._guild_weights: dict[GuildKey, float] = {}
        for guild_id, weight in (guild_weights or {}).items():
            self.set_guild_weight(guild_id, weight)
        self._guilds: dict[GuildKey, _GuildNode] = {}
        self._vtime = 0.0
        self._seq = 0
        self._sweep_at = 32
        self._jobs: dict[int, QueuedJob] = {}
        self._key_counts: dict[Hashable, int] = {}

    def set_guild_weight(self, guild_id: GuildKey, weight: float) -> None:
        """Set a guild's share weight (default 1); it applies to service from now on."""
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"guild weight must be a positive number, not {weight!r}")
        self._guild_weights[guild_id] = weight

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def get(self, job_id: int) -> QueuedJob | None:
        """The queued job with this id, if any."""
        return self._jobs.get(job_id)

    def jobs_of(self, user_id: int) -> list[QueuedJob]:
        """A user's queued jobs, in every guild, in the order they were pushed."""
        return [job for job in self._jobs.values() if job.user_id == user_id]

    def push(self, job: QueuedJob) -> None:
        """Queue a job at the back of its user's FIFO."""
        if job.job_id in self._jobs:
            raise ValueError(f"job {job.job_id} is already queued")
        guild = self._guilds.get(job.guild_id)
        if guild is None:
            guild = self._guilds[job.guild_id] = _GuildNode()
        flow = guild.users.get(job.user_id)
        if flow is None:
            flow = guild.users[job.user_id] = _UserFlow()
        if not flow.jobs:
            # A flow that turns backlogged starts at v, or later if its last service ends later.
            if not guild.backlogged:
                guild.start, guild.seq = max(self._vtime, guild.start), self._next_seq()
            flow.start, flow.seq = max(guild.vtime, flow.start), self._next_seq()
            guild.backlogged += 1
        flow.jobs.append(job)
        self._jobs[job.job_id] = job
        self._key_counts[job.batch_key] = self._key_counts.get(job.batch_key, 0) + 1

    def pop_batch(
        self, max_images: int, prefer: Callable[[QueuedJob], int] | None = None, window: float = 0.0
    ) -> list[QueuedJob]:
        """Take the fair pick plus compatible jobs in fair order, up to max_images images in all.

        With `prefer`, start instead with the job it ranks highest (above the fair pick's rank; True/False
        work as 1/0) among those whose start tag is within `window` of the fair pick's (see the module notes).
        The first job is always taken, even when it alone has more images than max_images.
        """
        if max_images < 1:
            raise ValueError(f"max_images must be at least 1, not {max_images}")
        first = self.first_pick(prefer, window)
        if first is None:
            return []
        batch = [first]
        room = max_images - first.images
        unseen = self._key_counts[first.batch_key] - 1
        walk = self.iter_order()
        # Stop at the last compatible job instead of walking the whole order.
        while room > 0 and unseen > 0:
            job = next(walk)
            if job.batch_key == first.batch_key and job is not first:
                unseen -= 1
                if job.images <= room:
                    batch.append(job)
                    room -= job.images
        # SFQ's virtual time at each level is the start tag of the job in service.
        guild = self._guilds[first.guild_id]
        self._vtime = guild.start
        guild.vtime = guild.users[first.user_id].start
        for job in batch:
            self._charge(job)
        return batch

    def first_pick(self, prefer: Callable[[QueuedJob], int] | None = None, window: float = 0.0) -> QueuedJob | None:
        """The job pop_batch(…, prefer, window) would start its batch with; changes nothing. None when empty."""
        tagged = self._iter_tagged()
        fair = next(tagged, None)
        if fair is None:
            return None
        fair_tag, _, first = fair
        if prefer is not None:
            first = self._preferred(tagged, fair_tag, prefer, window, int(prefer(first))) or first
        return first

    def _preferred(
        self,
        tagged: Iterator[tuple[float, float, QueuedJob]],
        fair_tag: float,
        prefer: Callable[[QueuedJob], int],
        window: float,
        fair_rank: int,
    ) -> QueuedJob | None:
        # At both levels the job's flow may be at most `window` ahead of the least-served flow: its
        # guild's tag against the fair pick's guild, its user's tag against its guild's least-served user.
        least: dict[GuildKey, float] = {}
        best, best_rank = None, fair_rank
        for guild_tag, user_tag, job in tagged:
            if guild_tag > fair_tag + window:
                break  # roots come in tag order: nothing later is within the window
            if job.guild_id not in least:
                least[job.guild_id] = min(u.start for u in self._guilds[job.guild_id].users.values() if u.jobs)
            if user_tag <= least[job.guild_id] + window:
                rank = int(prefer(job))
                if rank > best_rank:
                    best, best_rank = job, rank
        return best

    def remove(self, job_id: int) -> QueuedJob | None:
        """Cancel a queued job without charging anyone; None when it is not queued."""
        job = self._jobs.get(job_id)
        if job is None:
            return None
        self._take(job)
        self._forget_idle(self._guilds[job.guild_id])
        return job

    def iter_order(self) -> Iterator[QueuedJob]:
        """Yield queued jobs in the order repeated pop_batch(1) calls would serve them; changes nothing.

        Do not change the queue while iterating. O(log F) per job for F backlogged flows.
        """
        return (job for _, _, job in self._iter_tagged())

    def _iter_tagged(self) -> Iterator[tuple[float, float, QueuedJob]]:
        # The service order with each job's start tags, its guild's and its user's, as they would be then.
        seq = self._seq
        roots = [(g.start, g.seq, key) for key, g in self._guilds.items() if g.backlogged]
        heapq.heapify(roots)
        inner: dict[GuildKey, list[tuple[float, int, int]]] = {}
        cursors: dict[tuple[GuildKey, int], Iterator[QueuedJob]] = {}
        left: dict[tuple[GuildKey, int], int] = {}
        while roots:
            guild_start, _, guild_id = heapq.heappop(roots)
            guild = self._guilds[guild_id]
            heap = inner.get(guild_id)
            if heap is None:
                heap = inner[guild_id] = [(u.start, u.seq, uid) for uid, u in guild.users.items() if u.jobs]
                heapq.heapify(heap)
            user_start, _, user_id = heapq.heappop(heap)
            key = (guild_id, user_id)
            if key not in cursors:
                jobs = guild.users[user_id].jobs
                cursors[key], left[key] = iter(jobs), len(jobs)
            job = next(cursors[key])
            left[key] -= 1
            yield guild_start, user_start, job
            # Same arithmetic and tie-break order as _charge, so the simulation matches real pops.
            if left[key]:
                seq += 1
                heapq.heappush(heap, (user_start + job.cost / job.weight, seq, user_id))
            if heap:
                seq += 1
                heapq.heappush(roots, (guild_start + job.cost / self._guild_weight(guild_id), seq, guild_id))

    def order(self) -> list[QueuedJob]:
        """The whole simulated service order, for positions, ETAs and /queue."""
        return list(self.iter_order())

    def position(self, job_id: int) -> int | None:
        """1-based place of a job in the simulated service order; None when it is not queued."""
        if job_id not in self._jobs:
            return None
        for place, job in enumerate(self.iter_order(), start=1):
            if job.job_id == job_id:
                return place
        raise AssertionError("a queued job is missing from the service order")

    def _charge(self, job: QueuedJob) -> None:
        guild = self._guilds[job.guild_id]
        flow = guild.users[job.user_id]
        self._take(job)
        flow.start += job.cost / job.weight
        if flow.jobs:
            flow.seq = self._next_seq()
        guild.start += job.cost / self._guild_weight(job.guild_id)
        if guild.backlogged:
            guild.seq = self._next_seq()
        self._forget_idle(guild)

    def _take(self, job: QueuedJob) -> None:
        del self._jobs[job.job_id]
        count = self._key_counts.pop(job.batch_key) - 1
        if count:
            self._key_counts[job.batch_key] = count
        guild = self._guilds[job.guild_id]
        flow = guild.users[job.user_id]
        if flow.jobs[0] is job:
            flow.jobs.popleft()
        else:
            # A batch fill or a cancel may take a job from the middle of its user's FIFO.
            flow.jobs.remove(job)
        if not flow.jobs:
            guild.backlogged -= 1

    def _forget_idle(self, guild: _GuildNode) -> None:
        # Call only after charging. As in SFQ, a level that drains starts afresh: nobody was waiting,
        # so no one is owed anything and dropping every tag there is harmless (and keeps floats small).
        if not self._jobs:
            self._guilds.clear()
            self._vtime = 0.0
            return
        if not guild.backlogged:
            guild.users.clear()
        # An idle flow whose tag is at or below v would restart at v anyway, so dropping it changes
        # nothing; sweeping past a doubling threshold keeps this amortised O(1).
        if len(guild.users) > guild.sweep_at:
            guild.users = {k: u for k, u in guild.users.items() if u.jobs or u.start > guild.vtime}
            guild.sweep_at = 2 * len(guild.users) + 32
        if len(self._guilds) > self._sweep_at:
            self._guilds = {k: g for k, g in self._guilds.items() if g.backlogged or g.start > self._vtime}
            self._sweep_at = 2 * len(self._guilds) + 32

    def _guild_weight(self, guild_id: GuildKey) -> float:
        return self._guild_weights.get(guild_id, 1.0)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq


class ThroughputMeter:
    """Exponentially weighted GPU throughput in pixel-steps per second."""

    def __init__(self, alpha: float = 0.2) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], not {alpha}")
        self._alpha = alpha
        self._cost = 0.0
        self._seconds = 0.0

    def record(self, cost: float, seconds: float) -> None:
        """Record one finished GPU call: its total cost and how long it took."""
        if cost <= 0 or seconds <= 0:
            return
        if self._seconds == 0.0:
            self._cost, self._seconds = cost, seconds
            return
        # Average cost and time separately: a ratio of averages weights long calls by their length,
        # so one tiny fast call cannot swing the rate.
        self._cost += self._alpha * (cost - self._cost)
        self._seconds += self._alpha * (seconds - self._seconds)

    @property
    def rate(self) -> float | None:
        """Pixel-steps per second, or None before the first call."""
        return self._cost / self._seconds if self._seconds else None


def eta_seconds(queue: FairQueue, job_id: int, meter: ThroughputMeter) -> float | None:
    """Seconds until a queued job finishes if nothing else arrives; None when unknown."""
    rate = meter.rate
    if rate is None or job_id not in queue:
        return None
    ahead = 0.0
    for job in queue.iter_order():
        ahead += job.cost
        if job.job_id == job_id:
            return ahead / rate
    return None
