"""Affinity for (model, LoRAs): a job whose LoRAs are loaded goes before one that must load some, within the window."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.events import EventBus
from jobs.fair_queue import FairQueue, QueuedJob
from jobs.limits import Limits
from jobs.queue import JobQueue, Requester
from storage.store import Store
from tests.support.requests import txt2img

_ids = itertools.count(1)


def job(user: int, model: str, adapters: tuple[str, ...] = (), cost: float = 1.0) -> QueuedJob:
    return QueuedJob(next(_ids), user, user, cost, (model, adapters), 1, 1.0, model, frozenset(adapters))


def ranked(model: str, loaded: set[str]):
    return lambda queued: 0 if queued.model != model else 2 if queued.adapters <= loaded else 1


def test_the_best_ranked_job_in_the_window_goes_first_the_fair_pick_otherwise() -> None:
    q = FairQueue()
    fair, needs_load, loaded = job(1, "other"), job(2, "tiny", ("fog",)), job(3, "tiny", ("ink",))
    for queued in (fair, needs_load, loaded):
        q.push(queued)
    assert q.pop_batch(1, ranked("tiny", {"ink"}), window=1) == [loaded]
    assert q.pop_batch(1, ranked("tiny", {"ink"}), window=1) == [needs_load]  # the resident model still wins
    assert q.pop_batch(1, ranked("tiny", {"ink"}), window=1) == [fair]

    q = FairQueue()
    q.push(job(5, "other", cost=5))
    q.push(ahead := job(5, "tiny", ("ink",)))  # user 5's second job starts at tag 5
    q.push(fair := job(6, "other"))
    q.pop_batch(1)
    assert q.pop_batch(1, ranked("tiny", {"ink"}), window=1) == [fair]  # 5 ahead is beyond a window of 1
    assert q.pop_batch(1, ranked("tiny", {"ink"}), window=1) == [ahead]


@settings(max_examples=60, deadline=None)
@given(
    adapters=st.lists(st.sampled_from(["", "ink", "fog"]), min_size=2, max_size=6),
    window=st.integers(0, 20),
    pops=st.integers(10, 40),
)
def test_ranking_adds_at_most_the_window_to_the_fairness_bound(adapters, window, pops) -> None:
    """Backlogged users on one model, each with its own LoRA: service gaps stay within 2 jobs + window."""
    users = list(range(len(adapters)))
    q = FairQueue()
    for _ in range(pops + 1):
        for user in users:
            q.push(job(user, "tiny", (adapters[user],) if adapters[user] else ()))
    served = dict.fromkeys(users, 0.0)
    loaded: set[str] = set()
    for _ in range(pops):
        (taken,) = q.pop_batch(1, ranked("tiny", loaded), window)
        served[taken.user_id] += taken.cost
        loaded = set(taken.adapters)  # one resident LoRA at a time: the worst case for switching
    for f, g in itertools.combinations(users, 2):
        assert abs(served[f] - served[g]) <= 1 + 1 + window + 1 + 1e-9


async def test_the_queue_prefers_jobs_on_the_loaded_loras(tmp_path) -> None:
    async with await Store.open(tmp_path / "db.sqlite3", tmp_path / "images") as store:
        queue = JobQueue(store, EventBus(), Limits(max_queued_per_user=10))
        fog = await queue.submit(txt2img(loras=(("fog", 1.0),)), Requester(user_id=1, guild_id=1))
        ink = await queue.submit(txt2img(loras=(("ink", 0.5),)), Requester(user_id=2, guild_id=2))
        assert [j.adapters for j in queue.waiting()] == [frozenset({"fog"}), frozenset({"ink"})]
        (first,) = await queue.next_batch(1, "tiny", window=10**9, adapters=frozenset({"ink", "x"}))
        assert first.job_id == ink.job.id
        (second,) = await queue.next_batch(1, "tiny", window=10**9, adapters=frozenset())
        assert second.job_id == fog.job.id
        restored = await store.load_request(await store.get_job(ink.job.id))
        assert restored.loras == (("ink", 0.5),)  # stored with the job, back after a restart
