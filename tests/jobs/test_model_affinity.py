"""Model affinity in the fair queue: the resident model's jobs may go first, only within the window."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.fair_queue import FairQueue, QueuedJob

FAST = settings(max_examples=80, deadline=None)
_ids = itertools.count(1)


def job(user: int, model: str, cost: float = 1.0, guild: int | None = 1) -> QueuedJob:
    return QueuedJob(next(_ids), user, guild, cost, (model,), 1, 1.0, model)


def on(model: str):
    return lambda queued: queued.model == model


def test_without_a_resident_job_in_the_window_the_fair_pick_runs() -> None:
    q = FairQueue()
    first = job(1, "a", cost=10)
    q.push(first)
    q.push(job(1, "b", cost=10))  # user 1's second job starts at tag 10
    assert q.pop_batch(1, on("b"), window=5) == [first]


def test_a_resident_job_due_within_the_window_goes_first() -> None:
    q = FairQueue()
    q.push(job(1, "a", cost=10))
    wanted = job(2, "b", cost=10, guild=2)
    q.push(wanted)  # tied at tag 0 but after user 1's job in fair order
    assert [j.model for j in q.order()] == ["a", "b"]
    assert q.pop_batch(1, on("b"), window=0) == [wanted]


def test_the_preferred_job_fills_its_batch_with_compatible_jobs() -> None:
    q = FairQueue()
    q.push(job(1, "a"))
    b_jobs = [job(u, "b", guild=u) for u in (2, 3)]
    for queued in b_jobs:
        q.push(queued)
    assert q.pop_batch(4, on("b"), window=1) == b_jobs
    assert [j.model for j in q.order()] == ["a"]


@FAST
@given(
    models=st.lists(st.sampled_from("abc"), min_size=2, max_size=6),
    costs=st.lists(st.integers(1, 20), min_size=2, max_size=6),
    window=st.integers(0, 40),
    pops=st.integers(10, 60),
)
def test_preference_adds_at_most_the_window_to_the_fairness_bound(models, costs, window, pops) -> None:
    """Backlogged users, each on their own model: the service gap stays within c_f + c_g + window (+ a job)."""
    users = list(range(min(len(models), len(costs))))
    q = FairQueue()
    for _ in range(pops + 1):
        for user in users:
            q.push(job(user, models[user], costs[user], guild=None))
    served = dict.fromkeys(users, 0.0)
    resident = None
    for _ in range(pops):
        (taken,) = q.pop_batch(1, on(resident) if resident else None, window)
        served[taken.user_id] += taken.cost
        resident = taken.model
    biggest = max(costs[u] for u in users)
    for f, g in itertools.combinations(users, 2):
        assert abs(served[f] - served[g]) <= costs[f] + costs[g] + window + biggest + 1e-9


def test_mixed_models_switch_less_with_the_preference() -> None:
    def switches(window: float | None) -> int:
        q = FairQueue()
        for user in range(8):
            for _ in range(6):
                q.push(job(user, "ab"[user % 2], cost=1.0, guild=user % 2))
        resident, loads = None, 0
        while q:
            prefer = on(resident) if resident and window is not None else None
            batch = q.pop_batch(1, prefer, window or 0.0)
            loads += batch[0].model != resident
            resident = batch[0].model
        return loads

    # Two guilds alternate in fair order, each on its own model: a load on almost every job without it.
    without, with_window = switches(None), switches(4.0)
    assert without >= 40 and with_window <= without / 4
