"""A mixed queue (SD, DeepFloyd IF and FLUX.1 jobs, several users, two servers) with per-family costs."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest

from generation.catalog import Catalog
from generation.errors import InvalidRequest
from generation.request import GenerationRequest
from generation.specs import ModelSpec
from jobs.events import EventBus
from jobs.limits import Limits
from jobs.queue import JobQueue, Requester
from storage.store import Store

# Specs only: costing and refusing need no weights.
SPECS = [
    ModelSpec(name="sd", source="unused", kind="sd", steps=20, width=512, height=512),
    ModelSpec(name="if", source="unused", kind="if", steps=20, width=64, height=64),
    ModelSpec(name="flux", source="unused", kind="flux", steps=4, guidance=0.0, width=1024, height=1024),
]


def request(model: str, seed: int) -> GenerationRequest:
    spec = next(s for s in SPECS if s.name == model)
    return GenerationRequest("a sign", model, spec.width, spec.height, spec.steps, spec.guidance, seed)


@pytest.fixture
async def queue(tmp_path) -> JobQueue:
    async with await Store.open(tmp_path / "db.sqlite3", tmp_path / "images") as store:
        yield JobQueue(
            store, EventBus(), Limits(max_queued_per_user=100, max_pixels=2048 * 2048), catalog=Catalog(SPECS)
        )


def test_families_cost_their_own_gpu_work() -> None:
    catalog = Catalog(SPECS)
    costs = {spec.name: catalog.cost(request(spec.name, 1)) for spec in SPECS}
    # A FLUX image at 1024² is far more work than an SD 1.5 image at 512²; IF's cost is not its 64² stage I.
    assert costs["flux"] > 4 * costs["sd"]
    assert costs["if"] > request("if", 1).cost


async def test_mixed_queue_stays_fair_with_per_family_costs(queue: JobQueue) -> None:
    users = [(user, 1 + user % 2, model) for user, model in enumerate(["sd", "if", "flux", "sd", "flux", "if"])]
    seeds = itertools.count()
    for _ in range(40):  # enough that the cheapest jobs' users stay backlogged over the 30 picks
        for user, guild, model in users:
            await queue.submit(request(model, next(seeds)), Requester(user_id=user, guild_id=guild))
    served: dict[int, float] = defaultdict(float)
    by_guild: dict[int, float] = defaultdict(float)
    cost = {user: queue.catalog.cost(request(model, 0)) for user, _, model in users}
    largest = {guild: max(cost[u] for u, g, _ in users if g == guild) for guild in (1, 2)}
    for _ in range(30):  # everyone stays backlogged over this stretch
        (job,) = await queue.next_batch(1)
        assert job.cost == queue.catalog.cost(request(job.model, 0))
        served[job.user_id] += job.cost
        by_guild[job.guild_id] += job.cost
    assert all(queue.waiting(user) for user, _, _ in users), "the bound holds while everyone is backlogged"
    # SFQ's bound, with each family's own cost: guilds within their largest jobs, then users in a guild.
    assert abs(by_guild[1] - by_guild[2]) <= largest[1] + largest[2]
    for guild in (1, 2):
        members = [u for u, g, _ in users if g == guild]
        for f, g in itertools.combinations(members, 2):
            assert abs(served[f] - served[g]) <= cost[f] + cost[g]


async def test_what_a_model_cannot_do_is_refused_before_anything_is_stored(queue: JobQueue) -> None:
    with pytest.raises(InvalidRequest, match=r"'if'.*sampler"):
        await queue.submit(request("if", 1).with_changes(sampler="Euler a"), Requester(user_id=1, guild_id=1))
    with pytest.raises(InvalidRequest, match="no model called 'nope'"):
        await queue.submit(request("sd", 1).with_changes(model="nope"), Requester(user_id=1, guild_id=1))
    assert await queue.store.queued_jobs() == [] and len(queue) == 0
