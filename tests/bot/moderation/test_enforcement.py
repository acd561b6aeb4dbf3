"""Every server limit at every entry point that makes a job: /imagine, Reroll, Vary, Upscale, the Edit modal,
Apps › Remix and reply remix. Refusals are private (ephemeral, or an error reply) and name the limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.queue import Requester
from tests.bot.conftest import button
from tests.bot.moderation.entry_points import ENTRY_POINTS, EntryPoints, Outcome, make_result
from tests.support.requests import txt2img

QUEUED = "queued"


@dataclass
class Scenario:
    """Settings to apply, what each entry point asks for, and what each should answer."""

    name: str
    settings: Callable[[Any], Awaitable[dict[str, Any]]] | dict[str, Any]
    refusal: str  # part of the refusal every entry point not listed in `allowed` must show
    allowed: tuple[str, ...] = ()  # entry points the limit cannot apply to (they ask for nothing over it)
    imagine: dict[str, Any] = field(default_factory=lambda: {"prompt": "a lighthouse"})
    text: str = "a lighthouse at night"


async def _used_today(running) -> dict[str, Any]:
    used = (await running.store.usage(running.fake.member.id, running.fake.guild.id)).images
    return {"daily_images_per_user": used}


async def _one_waiting(running) -> dict[str, Any]:
    fake = running.fake
    await running.bot.services.queue.submit(txt2img("waiting"), Requester(fake.member.id, fake.guild.id))
    return {"max_queued_per_user": 1}


def scenarios(fake) -> list[Scenario]:
    art = fake.guild.channel("art")
    mods = fake.guild.role("Moderator")
    return [
        Scenario("no limits", {}, refusal="", allowed=ENTRY_POINTS),
        Scenario(
            "max_steps",
            {"max_steps": 3},
            "4 steps is over this server's limit of 3",
            imagine={"prompt": "x", "steps": 4},
            text="x --steps 4",
        ),
        Scenario(
            "max_count",
            {"max_count": 1},
            "2 images is over this server's limit of 1",
            allowed=("upscale",),  # always one image
            imagine={"prompt": "x", "count": 2},
            text="x --count 2",
        ),
        Scenario(
            "max_pixels",
            {"max_pixels": 64 * 64},
            "over this server's limit of 4,096",
            allowed=("reroll", "vary", "edit"),  # the source's own 64x64
            imagine={"prompt": "x", "size": "16:9"},
            text="x --size 128x128",
        ),
        Scenario("max_queued_per_user", _one_waiting, "job(s) waiting; the limit is 1"),
        Scenario("daily_images_per_user", _used_today, "images today (UTC); this request needs"),
        Scenario("cooldown_seconds", {"cooldown_seconds": 3600}, "cooldown between jobs is 3600 s"),
        Scenario("channels", {"channels": [art.id]}, f"Images can only be made in <#{art.id}>"),
        Scenario("roles", {"roles": [mods.id]}, f"needs one of these roles: <@&{mods.id}>"),
        Scenario("blocked_users", {"blocked_users": [fake.member.id]}, "blocked you from making images"),
        Scenario(
            "banned_words",
            {"banned_words": ["lighthouse"]},
            "a word this server does not allow: ||lighthouse||",
            imagine={"prompt": "a l1ght-house"},
            text="a big LIGHTHOUSE",
        ),
    ]


async def _apply(running, scenario: Scenario) -> list[str]:
    settings = scenario.settings if isinstance(scenario.settings, dict) else await scenario.settings(running)
    for key, value in settings.items():
        await running.store.set_guild_setting(running.fake.guild.id, key, value, by_user=running.fake.owner.id)
    return list(settings)


async def _clean_up(running, keys: list[str]) -> None:
    for key in keys:
        await running.store.reset_guild_setting(running.fake.guild.id, key, by_user=running.fake.owner.id)
    for user in (running.fake.member, running.fake.moderator, running.fake.other_member):
        for job in await running.store.active_jobs(user.id):
            await running.bot.services.queue.cancel(job.id)


async def test_every_limit_at_every_entry_point(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        entries = EntryPoints(fake, await make_result(running))
        await running.worker.stop()  # accepted jobs stay queued: no GPU time is spent past this point
        source = int(button(entries.result, "imagine:info").split(":")[2])
        assert [r.nsfw for r in await running.store.images_for_job(source)] == [None, None]  # no checker ran
        seen: dict[tuple[str, str], Outcome] = {}
        for scenario in scenarios(fake):
            keys = await _apply(running, scenario)
            for entry in ENTRY_POINTS:
                outcome = await entries.run(entry, fake.member, imagine=scenario.imagine, text=scenario.text)
                seen[scenario.name, entry] = outcome
                assert outcome.private or outcome.queued, (scenario.name, entry, outcome)
            await _clean_up(running, keys)

        table = "\n".join(f"{name:24} {entry:8} {outcome}" for (name, entry), outcome in seen.items())
        for scenario in scenarios(fake):
            for entry in ENTRY_POINTS:
                outcome = seen[scenario.name, entry]
                if entry in scenario.allowed:
                    assert outcome.queued, f"{scenario.name} should not stop {entry}:\n{table}"
                else:
                    assert not outcome.queued and scenario.refusal in outcome.text, (
                        f"{scenario.name} should stop {entry}:\n{table}"
                    )


async def test_who_and_where_limits_let_others_through(start_bot) -> None:
    async with start_bot() as running:
        fake, store, guild = running.fake, running.store, running.fake.guild.id
        entries = EntryPoints(fake, await make_result(running, count=1))
        await running.worker.stop()
        art, mods = fake.guild.channel("art"), fake.guild.role("Moderator")
        await store.set_guild_setting(guild, "channels", [art.id], by_user=fake.owner.id)
        assert (await entries.imagine(fake.member, channel_id=art.id, prompt="x")).queued
        await _clean_up(running, ["channels"])
        await store.set_guild_setting(guild, "roles", [mods.id], by_user=fake.owner.id)
        assert (await entries.imagine(fake.moderator, prompt="x")).queued  # has the role
        await _clean_up(running, ["roles"])
        await store.set_guild_setting(guild, "blocked_users", [fake.member.id], by_user=fake.owner.id)
        assert (await entries.click("reroll", fake.other_member)).queued
        await _clean_up(running, ["blocked_users"])
        # Moderators bypass nothing: their own jobs meet the same limits.
        await store.set_guild_setting(guild, "max_steps", 3, by_user=fake.owner.id)
        refused = await entries.imagine(fake.moderator, prompt="x", steps=4)
        assert not refused.queued and "limit of 3" in refused.text


async def test_fair_share_weights_and_the_servers_negative_prompt(start_bot) -> None:
    async with start_bot() as running:
        fake, store, guild = running.fake, running.store, running.fake.guild.id
        entries = EntryPoints(fake, await make_result(running, count=1, negative="fog"))
        await running.worker.stop()
        mods = fake.guild.role("Moderator")
        await store.set_guild_setting(guild, "share_roles", {str(mods.id): 2.0}, by_user=fake.owner.id)
        await store.set_guild_setting(guild, "negative_prompt", "gore", by_user=fake.owner.id)

        mod_job = await store.get_job((await entries.imagine(fake.moderator, prompt="a cat")).job_id)
        assert mod_job.weight == 2.0 and mod_job.negative_prompt == "gore"
        assert [j.weight for j in running.bot.services.queue.waiting(fake.moderator.id)] == [2.0]
        remix = await store.get_job((await entries.reply(fake.member, "a dog --no rain")).job_id)
        assert remix.weight == 1.0 and remix.negative_prompt == "rain, gore"
        reroll = await store.get_job((await entries.click("reroll", fake.member)).job_id)
        assert reroll.negative_prompt == "fog, gore"
        edited = await store.get_job((await entries.edit(fake.member, prompt="a lighthouse, again")).job_id)
        assert edited.negative_prompt == "fog, gore"
