"""/imagine-admin through the fake Discord: who may use it, what it says, what it stores and audits; and what
moderators may do to other members' jobs (delete, cancel, history)."""

from __future__ import annotations

from tests.bot.conftest import button
from tests.bot.moderation.entry_points import EPHEMERAL, make_result
from tests.fake_discord import FakeDiscord

MANAGE_GUILD = 1 << 5


def admin_actions(fake: FakeDiscord) -> list[tuple[str, dict]]:
    """Every /imagine-admin sub-command with options that would change something."""
    art, mods = fake.guild.channel("art"), fake.guild.role("Moderator")
    return [
        ("imagine-admin show", {}),
        ("imagine-admin audit", {}),
        ("imagine-admin set", {"setting": "max_steps", "value": "20"}),
        ("imagine-admin reset", {"setting": "max_steps"}),
        ("imagine-admin channels add", {"channel": art.id}),
        ("imagine-admin channels remove", {"channel": art.id}),
        ("imagine-admin roles add", {"role": mods.id}),
        ("imagine-admin roles remove", {"role": mods.id}),
        ("imagine-admin share add", {"role": mods.id, "weight": 2.0}),
        ("imagine-admin share remove", {"role": mods.id}),
        ("imagine-admin block add", {"member": fake.other_member.id}),
        ("imagine-admin block remove", {"member": fake.other_member.id}),
        ("imagine-admin words add", {"words": "gore, blood bath"}),
        ("imagine-admin words remove", {"words": "gore"}),
    ]


async def admin(fake: FakeDiscord, name: str, options: dict | None = None, *, user=None) -> dict:
    """Run an admin command; the (always ephemeral) answer's data."""
    handle = await fake.send_slash_command(name, options or {}, user=user or fake.moderator)
    data = (await handle.wait_for_callback())["data"]
    assert data["flags"] & EPHEMERAL, (name, data)
    return data


def text_of(data: dict) -> str:
    return data.get("content") or data["embeds"][0]["description"]


async def test_every_admin_action_needs_manage_server_every_time(start_bot) -> None:
    async with start_bot() as running:
        fake, store = running.fake, running.store
        (command,) = [c for c in fake.registered_commands(fake.guild.id) if c["name"] == "imagine-admin"]
        assert int(command["default_member_permissions"]) == MANAGE_GUILD  # hidden from members by default
        assert command["contexts"] == [0]  # servers only
        rows = []
        for name, options in admin_actions(fake):
            # A server may show the command to everyone (integration settings): the bot checks again.
            refused = await admin(fake, name, options, user=fake.member)
            allowed = await admin(fake, name, options, user=fake.moderator)
            rows.append((name, text_of(refused), text_of(allowed)))
        for name, refused, allowed in rows:
            assert "missing Manage Server permission" in refused, (name, refused)
            assert not allowed.startswith("⚠️") and "missing" not in allowed, (name, allowed)
        audit = await store.audit_log(fake.guild.id, limit=100)
        assert {e.user_id for e in audit} == {fake.moderator.id}  # members changed nothing
        assert len(audit) == 12  # each change and each undo, written once
        assert await store.get_guild_settings(fake.guild.id) == {"banned_words": ["blood bath"]}


async def test_set_show_reset_and_audit(start_bot) -> None:
    async with start_bot() as running:
        fake, store, guild = running.fake, running.store, running.fake.guild.id
        shown = text_of(await admin(fake, "imagine-admin show"))
        assert "`max_steps` Most steps per image: **60** · default" in shown
        assert "`nsfw` Images flagged as NSFW: **block: flagged images are not posted** · default" in shown
        assert "No safety checker is configured for model `tiny`: NSFW images cannot be detected" in shown

        changed = await admin(fake, "imagine-admin set", {"setting": "max_steps", "value": "12"})
        assert changed["content"] == "`max_steps` is now **12** (was 60)."
        bad = await admin(fake, "imagine-admin set", {"setting": "max_steps", "value": "500"})
        assert "`max_steps` must be from 1 to 60, not 500" in bad["content"]  # the config's limit is the ceiling
        bad = await admin(fake, "imagine-admin set", {"setting": "nsfw", "value": "sometimes"})
        assert "must be one of: block, spoiler, age-restricted" in bad["content"]
        await admin(fake, "imagine-admin set", {"setting": "cooldown_seconds", "value": "2m"})
        await admin(fake, "imagine-admin set", {"setting": "nsfw", "value": "spoiler"})
        await admin(fake, "imagine-admin roles add", {"role": fake.guild.role("Moderator").id})
        assert await store.get_guild_settings(guild) == {
            "max_steps": 12,
            "cooldown_seconds": 120.0,
            "nsfw": "spoiler",
            "roles": [fake.guild.role("Moderator").id],
        }
        shown = text_of(await admin(fake, "imagine-admin show"))
        assert "**12** · set" in shown and "**120 s** · set" in shown and "spoiler" in shown

        reset = await admin(fake, "imagine-admin reset", {"setting": "max_steps"})
        assert reset["content"] == "`max_steps` is back to the default: **60**."

        # `dms` applies to the whole bot: only the bot's owner may change it, even with Manage Server.
        refused = await admin(fake, "imagine-admin set", {"setting": "dms", "value": "off"})
        assert "only the bot's owner can change it" in refused["content"]
        await admin(fake, "imagine-admin set", {"setting": "dms", "value": "off"}, user=fake.owner)

        log = text_of(await admin(fake, "imagine-admin audit"))
        lines = log.splitlines()
        assert f"<@{fake.owner.id}> `dms` (bot-wide): default → off" in lines[0]
        assert f"<@{fake.moderator.id}> `max_steps`: 12 → default" in lines[1]
        assert any(f"<@{fake.moderator.id}> `max_steps`: default → 12" in line for line in lines)
        assert all(line.startswith("<t:") for line in lines)  # when, as a Discord timestamp


async def test_moderators_act_on_other_members_jobs(start_bot) -> None:
    """The delete / cancel / history-of-others part of the authorization matrix."""
    async with start_bot() as running:
        fake, store = running.fake, running.store
        results = {actor.id: await make_result(running, count=1) for actor in (fake.other_member, fake.moderator)}
        await running.worker.stop()  # jobs queued from here on wait, to be cancelled
        rows = {}
        for actor in (fake.other_member, fake.moderator):
            result = results[actor.id]
            click = await fake.send_button_click(int(result["id"]), button(result, "imagine:delete"), user=actor)
            rows["delete", actor.username] = (await click.wait_for_callback())["data"]["content"]

            waiting = await fake.send_slash_command("imagine", {"prompt": "waiting"}, user=fake.member)
            queued = (await waiting.wait_for_callback())["data"]
            click = await fake.send_button_click(
                waiting.original_message_id, button(queued, "imagine:cancel"), user=actor
            )
            rows["cancel button", actor.username] = (await click.wait_for_callback())["data"]["content"]

            other = await fake.send_slash_command("imagine", {"prompt": "waiting too"}, user=fake.member)
            other_id = int(button((await other.wait_for_callback())["data"], "imagine:cancel").split(":")[2])
            command = await fake.send_slash_command("cancel", {"job": other_id}, user=actor)
            rows["/cancel", actor.username] = (await command.wait_for_callback())["data"]["content"]

            history = await fake.send_slash_command("history", {"user": fake.member.id}, user=actor)
            data = (await history.wait_for_callback())["data"]
            rows["/history of others", actor.username] = data.get("content") or data["embeds"][0]["title"]
        for action in ("delete", "cancel button", "/cancel", "/history of others"):
            assert "⚠️ Only" in rows[action, "bob"], rows
        assert rows["delete", "moderator"] == "Deleted 1 image(s).", rows
        assert rows["cancel button", "moderator"].startswith("Cancelled job"), rows
        assert rows["/cancel", "moderator"].startswith("Cancelled job"), rows
        assert rows["/history of others", "moderator"] == "Images by Alice", rows
        assert len(await store.active_jobs(fake.member.id)) == 2  # bob's tries cancelled nothing
