"""Property tests for the fair scheduler: shares, bounds, batching, and that order() predicts pops."""

from __future__ import annotations

import copy
import itertools
from collections import defaultdict
from collections.abc import Hashable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jobs.fair_queue import FairQueue, GuildKey, QueuedJob, ThroughputMeter, eta_seconds

FAST = settings(max_examples=80, deadline=None)
EPS = 1e-9
_fresh_ids = itertools.count(10**9)  # ids for backlog(); tests pick their own below this


def make_job(
    job_id: int,
    user: int,
    guild: GuildKey = 1,
    cost: float = 1.0,
    key: Hashable = "k",
    images: int = 1,
    weight: float = 1.0,
) -> QueuedJob:
    return QueuedJob(job_id, user, guild, cost, key, images, weight)


def backlog(q: FairQueue, flows: Sequence[tuple[GuildKey, int]], n: int, cost: float = 1.0, **kw) -> None:
    """Push n jobs for each (guild, user) flow, round-robin, with fresh ids."""
    for _ in range(n):
        for guild, user in flows:
            q.push(make_job(next(_fresh_ids), user, guild, cost, **kw))


def drain_singly(q: FairQueue) -> list[QueuedJob]:
    out = []
    while batch := q.pop_batch(1):
        assert len(batch) == 1
        out.extend(batch)
    return out


def expected_batch(order: list[QueuedJob], max_images: int) -> list[QueuedJob]:
    """The batch the spec asks for: the fair pick, then compatible jobs in fair order that still fit."""
    if not order:
        return []
    first, room = order[0], max_images - order[0].images
    batch = [first]
    for job in order[1:]:
        if room <= 0:
            break
        if job.batch_key == first.batch_key and job.images <= room:
            batch.append(job)
            room -= job.images
    return batch


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{"cost": 0}, {"cost": -1}, {"cost": float("nan")}, {"weight": 0}, {"images": 0}])
def test_invalid_jobs_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_job(1, 1, **kwargs)


def test_duplicate_ids_and_bad_batch_sizes_are_rejected() -> None:
    q = FairQueue()
    q.push(make_job(1, 1))
    with pytest.raises(ValueError, match="already queued"):
        q.push(make_job(1, 2))
    with pytest.raises(ValueError, match="max_images"):
        q.pop_batch(0)
    with pytest.raises(ValueError, match="guild weight"):
        FairQueue({1: 0.0})


# --- shares -------------------------------------------------------------------------------------


@FAST
@given(
    n_users=st.integers(2, 8),
    cost=st.integers(1, 10**9),
    separate_guilds=st.booleans(),
)
def test_equal_demand_gets_equal_service(n_users: int, cost: int, separate_guilds: bool) -> None:
    flows: list[tuple[GuildKey, int]] = [((None if u == 0 else u) if separate_guilds else 7, u) for u in range(n_users)]
    q = FairQueue()
    backlog(q, flows, 12, cost)
    served: dict[int, float] = dict.fromkeys(range(n_users), 0.0)
    for _ in range(12 * n_users):
        (job,) = q.pop_batch(1)
        served[job.user_id] += job.cost
        assert max(served.values()) - min(served.values()) <= cost


@FAST
@given(
    weights=st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=2, max_size=6),
    costs=st.data(),
)
def test_backlogged_users_stay_within_one_job_of_their_weighted_share(weights: list[float], costs) -> None:
    # From a common start, SFQ keeps normalised service within the larger normalised job of the two.
    q = FairQueue()
    ids = itertools.count()
    largest: dict[int, float] = defaultdict(float)
    depth = 15
    for user, weight in enumerate(weights):
        for cost in costs.draw(st.lists(st.integers(1, 50), min_size=depth, max_size=depth)):
            q.push(make_job(next(ids), user, 1, cost, weight=weight))
            largest[user] = max(largest[user], cost / weight)
    normalised: dict[int, float] = dict.fromkeys(range(len(weights)), 0.0)
    left = dict.fromkeys(range(len(weights)), depth)
    while all(left.values()):
        (job,) = q.pop_batch(1)
        normalised[job.user_id] += job.cost / job.weight
        left[job.user_id] -= 1
        for f, g in itertools.combinations(normalised, 2):
            assert abs(normalised[f] - normalised[g]) <= max(largest[f], largest[g]) + EPS


@FAST
@given(n_small=st.integers(2, 10), cost=st.integers(1, 1000), pops=st.integers(1, 200))
def test_guilds_split_first_then_users_within_a_guild(n_small: int, cost: int, pops: int) -> None:
    q = FairQueue()
    backlog(q, [(1, 0)], 200, cost)
    backlog(q, [(2, u) for u in range(1, n_small + 1)], 100, cost)
    per_guild: dict[GuildKey, int] = {1: 0, 2: 0}
    per_user: dict[int, int] = defaultdict(int)
    for _ in range(pops):
        (job,) = q.pop_batch(1)
        per_guild[job.guild_id] += job.cost
        per_user[job.user_id] += job.cost
        assert abs(per_guild[1] - per_guild[2]) <= cost
        in_b = [per_user[u] for u in range(1, n_small + 1)]
        assert max(in_b) - min(in_b) <= cost


def test_ten_user_guild_gets_half_not_ten_elevenths() -> None:
    q = FairQueue()
    backlog(q, [(1, 0)], 100, 5.0)
    backlog(q, [(2, u) for u in range(1, 11)], 10, 5.0)
    first_hundred = [q.pop_batch(1)[0] for _ in range(100)]
    assert sum(j.guild_id == 1 for j in first_hundred) == 50
    assert {sum(j.user_id == u for j in first_hundred) for u in range(1, 11)} == {5}


def test_weight_two_user_gets_twice_the_service() -> None:
    q = FairQueue()
    ids = itertools.count()
    for _ in range(300):
        q.push(make_job(next(ids), 1, 1, 3.0, weight=1.0))
        q.push(make_job(next(ids), 2, 1, 3.0, weight=2.0))
    counts = defaultdict(int)
    for _ in range(300):
        counts[q.pop_batch(1)[0].user_id] += 1
    assert counts[2] == 200 and counts[1] == 100


def test_guild_weight_scales_the_guild_share() -> None:
    q = FairQueue({10: 3.0})
    backlog(q, [(10, 1), (2, 2)], 100)
    counts = defaultdict(int)
    for _ in range(100):
        counts[q.pop_batch(1)[0].guild_id] += 1
    assert counts[10] == 75 and counts[2] == 25


@FAST
@given(pops=st.integers(1, 250))
def test_cost_four_jobs_are_served_a_quarter_as_often(pops: int) -> None:
    q = FairQueue()
    backlog(q, [(1, 1)], 60, 4.0)
    backlog(q, [(1, 2)], 250, 1.0)
    counts = defaultdict(int)
    for _ in range(pops):
        counts[q.pop_batch(1)[0].user_id] += 1
    assert abs(4 * counts[1] - counts[2]) <= 4


# --- latency and credit -------------------------------------------------------------------------


@FAST
@given(
    heavy_costs=st.lists(st.integers(1, 100), min_size=100, max_size=100),
    heavy_keys=st.lists(st.sampled_from("ab"), min_size=100, max_size=100),
    heavy_weight=st.sampled_from([1.0, 2.0, 4.0]),
    placement=st.sampled_from(["same guild", "other guild", "dm"]),
    warmup=st.integers(0, 60),
    max_images=st.integers(1, 4),
    light_cost=st.integers(1, 10_000),
    light_key=st.sampled_from("ab"),
)
def test_a_single_job_waits_at_most_one_batch_behind_a_heavy_user(
    heavy_costs, heavy_keys, heavy_weight, placement, warmup, max_images, light_cost, light_key
) -> None:
    q = FairQueue()
    for i, (cost, key) in enumerate(zip(heavy_costs, heavy_keys, strict=True)):
        q.push(make_job(i, 1, 5, cost, key, weight=heavy_weight))
    for _ in range(warmup):
        q.pop_batch(max_images)
    guild = {"same guild": 5, "other guild": 6, "dm": None}[placement]
    q.push(make_job(999, 2, guild, light_cost, light_key))
    assert q.position(999) in (1, 2)  # behind at most the heavy job already tied at the front
    heavy_before = 0
    for _ in range(2):
        batch = q.pop_batch(max_images)
        if any(j.job_id == 999 for j in batch):
            break
        heavy_before += len(batch)
    else:
        pytest.fail("the light job was not in the next two batches")
    assert heavy_before <= max_images


@FAST
@given(
    idle_pops=st.integers(1, 80),
    cost_a=st.integers(1, 20),
    cost_b=st.integers(1, 20),
    same_guild=st.booleans(),
)
def test_idle_users_do_not_bank_credit(idle_pops: int, cost_a: int, cost_b: int, same_guild: bool) -> None:
    q = FairQueue()
    guild_a = 1 if same_guild else 2
    q.push(make_job(-1, 1, guild_a, cost_a))
    backlog(q, [(1, 2)], idle_pops + 60, cost_b)
    # A gets one job, then sits idle while B is served alone.
    for _ in range(idle_pops + 1):
        q.pop_batch(1)
    backlog(q, [(guild_a, 1)], 50, cost_a)
    served = {1: 0, 2: 0}
    streak = (0, 0)
    for _ in range(50):
        (job,) = q.pop_batch(1)
        served[job.user_id] += job.cost
        streak = (job.user_id, streak[1] + 1 if streak[0] == job.user_id else 1)
        # Credit banked while idle would show as A running far ahead of B after its return.
        assert served[1] - served[2] <= cost_a + cost_b
        if streak[0] == 1:
            assert streak[1] * cost_a <= cost_a + 2 * cost_b


def test_leaving_and_coming_back_does_not_skip_ahead() -> None:
    q = FairQueue()
    backlog(q, [(1, 2)], 10, 10.0)
    q.push(make_job(1, 1, 1, 10.0))
    order = [q.pop_batch(1)[0].user_id for _ in range(2)]
    assert order == [2, 1]
    q.push(make_job(2, 1, 1, 10.0))  # user 1 re-queues at once: they just had a turn, so B goes next
    assert [j.user_id for j in q.order()[:2]] == [2, 1]


@FAST
@given(
    cost_hopper=st.integers(1, 100),
    cost_steady=st.integers(1, 100),
    weight=st.sampled_from([1.0, 2.0]),
    same_guild=st.booleans(),
)
def test_resubmitting_one_job_at_a_time_earns_no_more_than_a_backlog(
    cost_hopper: int, cost_steady: int, weight: float, same_guild: bool
) -> None:
    # The hopper's flow empties after every job; its finish tag must follow it back into the queue.
    q = FairQueue()
    backlog(q, [(1, 2)], 400, cost_steady)
    hopper_guild = 1 if same_guild else 3
    served = {1: 0.0, 2: 0.0}
    for _ in range(200):
        if not q.jobs_of(1):
            q.push(make_job(next(_fresh_ids), 1, hopper_guild, cost_hopper, weight=weight))
        (job,) = q.pop_batch(1)
        served[job.user_id] += job.cost / (job.weight if same_guild else 1.0)
        assert served[1] - served[2] <= served_bound(cost_hopper, cost_steady, weight, same_guild)


def served_bound(cost_hopper: int, cost_steady: int, weight: float, same_guild: bool) -> float:
    return (cost_hopper / weight if same_guild else cost_hopper) + cost_steady + EPS


@FAST
@given(placement=st.sampled_from(["same guild", "new guilds", "dm"]), cost=st.integers(1, 50))
def test_newcomers_using_half_the_gpu_leave_the_other_half_to_a_backlogged_user(placement: str, cost: int) -> None:
    q = FairQueue()
    backlog(q, [(1, 0)], 100, cost)
    heavy = 0
    for step in range(100):
        if step % 2 == 0:
            newcomer = step + 1
            guild = {"same guild": 1, "new guilds": 100 + newcomer, "dm": None}[placement]
            q.push(make_job(next(_fresh_ids), newcomer, guild, cost))
        heavy += q.pop_batch(1)[0].user_id == 0
    assert heavy == 50


# --- the SFQ bound under arbitrary traffic ------------------------------------------------------

FLOWS: list[tuple[GuildKey, int]] = [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 1), (None, 6)]

push_op = st.tuples(
    st.just("push"),
    st.integers(0, len(FLOWS) - 1),
    st.integers(1, 30),
    st.sampled_from([0.5, 1.0, 2.0]),
)
pop_op = st.tuples(st.just("pop"))
# Pushes and pops about equally often, cancels rarer, so flows stay backlogged for long stretches.
op = st.one_of(push_op, pop_op, push_op, pop_op, st.tuples(st.just("remove"), st.integers(0, 10**6)))


@settings(max_examples=200, deadline=None)
@given(
    ops=st.tuples(st.lists(push_op, min_size=5, max_size=40), st.lists(op, max_size=120)).map(
        lambda parts: parts[0] + parts[1]
    ),
    guild_weights=st.sampled_from([{}, {1: 2.0}, {2: 3.0, None: 0.5}]),
)
def test_fair_share_bound_holds_for_any_arrivals_and_cancels(ops, guild_weights) -> None:
    """Over any stretch where two flows stay backlogged, |W_f/w_f - W_g/w_g| <= c_f/w_f + c_g/w_g."""
    q = FairQueue(guild_weights)
    queued: dict[int, QueuedJob] = {}
    ids = itertools.count()
    epoch: dict[Hashable, int] = defaultdict(int)  # bumped each time a flow turns backlogged
    largest: dict[Hashable, float] = defaultdict(float)
    served: dict[Hashable, float] = defaultdict(float)
    history: list[tuple[dict[Hashable, int], dict[Hashable, float]]] = []  # per pop: backlog, service after

    def backlogged() -> dict[Hashable, int]:
        users = {("u", j.guild_id, j.user_id) for j in queued.values()}
        guilds = {("g", j.guild_id) for j in queued.values()}
        return {k: epoch[k] for k in users | guilds}

    for item in ops:
        if item[0] == "push":
            _, flow, cost, weight = item
            guild, user = FLOWS[flow]
            before = backlogged()
            job = make_job(next(ids), user, guild, cost, weight=weight)
            q.push(job)
            queued[job.job_id] = job
            for key, norm in (
                (("u", guild, user), cost / weight),
                (("g", guild), cost / guild_weights.get(guild, 1.0)),
            ):
                largest[key] = max(largest[key], norm)
                if key not in before:
                    epoch[key] += 1
        elif item[0] == "remove":
            if queued:
                victim = sorted(queued)[item[1] % len(queued)]
                assert q.remove(victim) == queued.pop(victim)
        else:
            before = backlogged()
            batch = q.pop_batch(1)
            assert bool(batch) == bool(before)  # work-conserving
            for job in batch:
                del queued[job.job_id]
                served[("u", job.guild_id, job.user_id)] += job.cost / job.weight
                served[("g", job.guild_id)] += job.cost / guild_weights.get(job.guild_id, 1.0)
            if batch:
                history.append((before, dict(served)))

    keys = set(largest)
    for f, g in itertools.combinations(keys, 2):
        if f[0] != g[0] or (f[0] == "u" and f[1] != g[1]):
            continue  # compare users within one guild, and guilds with guilds
        bound = largest[f] + largest[g] + EPS
        run: list[float] = []
        run_epochs = None
        previous = {}
        for back, after in history:
            epochs = (back.get(f), back.get(g))
            if None in epochs or epochs != run_epochs:
                run = [previous.get(f, 0.0) - previous.get(g, 0.0)]
                run_epochs = epochs if None not in epochs else None
            if run_epochs is not None:
                run.append(after.get(f, 0.0) - after.get(g, 0.0))
                assert max(run) - min(run) <= bound, (f, g, run)
            previous = after


# --- batching -----------------------------------------------------------------------------------


@FAST
@given(
    n_users=st.integers(2, 5),
    max_images=st.integers(2, 6),
    data=st.data(),
)
def test_batching_keeps_backlogged_users_close_to_fair(n_users: int, max_images: int, data) -> None:
    # Fills are charged in full and taken in fair order, so a backlogged user can run ahead of another
    # by at most about one batch of jobs.
    q = FairQueue()
    ids = itertools.count()
    depth = 30
    for user in range(n_users):
        costs = data.draw(st.lists(st.integers(1, 20), min_size=depth, max_size=depth))
        keys = data.draw(st.lists(st.sampled_from("ab"), min_size=depth, max_size=depth))
        for cost, key in zip(costs, keys, strict=True):
            q.push(make_job(next(ids), user, 1, cost, key))
    largest = 20
    served = dict.fromkeys(range(n_users), 0)
    left = dict.fromkeys(range(n_users), depth)
    while min(left.values()) >= max_images:
        for job in q.pop_batch(max_images):
            served[job.user_id] += job.cost
            left[job.user_id] -= 1
        assert max(served.values()) - min(served.values()) <= (max_images + 1) * largest


def test_batch_fills_with_a_heavy_users_compatible_jobs() -> None:
    q = FairQueue()
    backlog(q, [(1, 1)], 20, key="sd15-512")
    q.push(make_job(1, 2, 2, key="sd15-512"))
    q.push(make_job(2, 3, 2, key="sdxl-1024"))
    first = q.pop_batch(4)
    assert [j.user_id for j in first] == [1, 2, 1, 1]
    assert q.pop_batch(4)[0].job_id == 2  # the incompatible light job leads the very next batch


def test_first_job_is_taken_even_when_it_is_too_big() -> None:
    q = FairQueue()
    q.push(make_job(1, 1, images=4))
    q.push(make_job(2, 2, images=1))
    assert [j.job_id for j in q.pop_batch(2)] == [1]
    assert [j.job_id for j in q.pop_batch(2)] == [2]


# --- order(), position(), remove() agree with what pops do ---------------------------------------


class QueueMachine(RuleBasedStateMachine):
    """Random pushes, cancels and batched pops; order() must always predict single pops exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.q = FairQueue({2: 2.0})
        self.model: dict[int, QueuedJob] = {}
        self.ids = itertools.count()

    @rule(
        flow=st.sampled_from(FLOWS),
        cost=st.integers(1, 40),
        key=st.sampled_from("abc"),
        images=st.integers(1, 4),
        weight=st.sampled_from([1.0, 2.0]),
    )
    def push(self, flow: tuple[GuildKey, int], cost: int, key: str, images: int, weight: float) -> None:
        job = make_job(next(self.ids), flow[1], flow[0], cost, key, images, weight)
        self.q.push(job)
        self.model[job.job_id] = job

    @precondition(lambda self: self.model)
    @rule(pick=st.integers(0, 10**6))
    def cancel(self, pick: int) -> None:
        victim = sorted(self.model)[pick % len(self.model)]
        assert self.q.remove(victim) is self.model.pop(victim)
        assert self.q.remove(victim) is None
        assert self.q.position(victim) is None

    @rule(max_images=st.integers(1, 8))
    def pop(self, max_images: int) -> None:
        expected = expected_batch(self.q.order(), max_images)
        batch = self.q.pop_batch(max_images)
        assert batch == expected
        assert bool(batch) == bool(self.model)  # work-conserving
        if batch:
            assert all(j.batch_key == batch[0].batch_key for j in batch)
            assert len(batch) == 1 or sum(j.images for j in batch) <= max_images
        for job in batch:
            del self.model[job.job_id]

    @invariant()
    def order_predicts_single_pops(self) -> None:
        order = self.q.order()
        assert order == self.q.order()  # order() changes nothing
        assert order == drain_singly(copy.deepcopy(self.q))
        assert sorted(j.job_id for j in order) == sorted(self.model)
        for place, job in enumerate(order, start=1):
            assert self.q.position(job.job_id) == place
        assert len(self.q) == len(self.model)
        assert all(j in self.q for j in self.model)
        for user in {j.user_id for j in self.model.values()}:
            assert self.q.jobs_of(user) == [j for j in self.model.values() if j.user_id == user]


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)


def test_remove_updates_positions_and_keeps_user_fifo() -> None:
    q = FairQueue()
    for i, user in enumerate([1, 1, 1, 2, 2]):
        q.push(make_job(i, user))
    assert [j.job_id for j in q.order()] == [0, 3, 1, 4, 2]
    assert q.remove(3) == make_job(3, 2)
    assert q.position(4) == 2  # user 2's next job inherits the cancelled one's place
    assert [j.job_id for j in q.order()] == [0, 4, 1, 2]
    assert q.remove(3) is None and 3 not in q and len(q) == 4
    assert [j.job_id for j in q.jobs_of(1)] == [0, 1, 2]


def test_many_idle_users_are_forgotten_without_changing_order() -> None:
    q = FairQueue()
    backlog(q, [(0, 0)], 1000)  # keeps the queue busy, so only the sweep can forget anyone
    for user in range(1, 600):  # each comes once and leaves; the queue must not keep them forever
        q.push(make_job(user, user, guild=user % 9))
        q.pop_batch(1)
        q.pop_batch(1)
    assert len(q._guilds) <= 50 and all(len(g.users) <= 70 for g in q._guilds.values())
    backlog(q, [(1, 1), (2, 2), (0, 3)], 3)
    assert [j.user_id for j in q.order()] == drain_user_ids(copy.deepcopy(q))


def drain_user_ids(q: FairQueue) -> list[int]:
    return [j.user_id for j in drain_singly(q)]


# --- ETA ----------------------------------------------------------------------------------------


def test_throughput_meter_and_eta() -> None:
    meter = ThroughputMeter(alpha=0.5)
    q = FairQueue()
    q.push(make_job(1, 1, cost=100.0))
    q.push(make_job(2, 2, cost=300.0))
    assert meter.rate is None and eta_seconds(q, 1, meter) is None
    meter.record(100.0, 1.0)
    assert meter.rate == pytest.approx(100.0)
    meter.record(300.0, 1.0)  # averages 200 pixel-steps over 1 s
    assert meter.rate == pytest.approx(200.0)
    assert eta_seconds(q, 1, meter) == pytest.approx(0.5)
    assert eta_seconds(q, 2, meter) == pytest.approx(2.0)
    assert eta_seconds(q, 3, meter) is None
